"""Alpha paste and Poisson blending, and the NSA-style PoissonPatch transform."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from anomgen.core import from_dict
from anomgen.functional.blend import MIN_CHANGE, paste, poisson_blend
from anomgen.io import TexturePool
from anomgen.transforms.poisson import PoissonPatch
from tests.conftest import random_image


def _assert_changed_mask(before: torch.Tensor, after: torch.Tensor, mask: torch.Tensor) -> None:
    """The mask is binary and marks exactly the pixels that changed by more than MIN_CHANGE."""
    assert mask.shape == (1, *before.shape[-2:])
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
    inside = mask[0].bool()
    assert torch.equal(after[:, ~inside], before[:, ~inside]), "a pixel outside the mask changed"
    change = (after - before).abs().amax(dim=0)
    assert bool((change[inside] > MIN_CHANGE).all()), "a mask pixel did not change"


# ---------------------------------------------------------------------------- paste


def test_paste_places_clips_and_converts_channels():
    target = torch.full((3, 10, 12), 0.5)
    patch = torch.zeros(1, 4, 5)
    alpha = torch.ones(1, 4, 5)
    alpha[0, 0, 0] = 0
    out, mask = paste(target, patch, alpha, 2, 3)
    assert out.shape == (3, 10, 12)
    assert mask[0, 2:6, 3:8].sum() == 19 and mask.sum() == 19 and mask[0, 2, 3] == 0
    assert torch.equal(out[:, 3, 4], torch.zeros(3))
    _assert_changed_mask(target, out, mask)
    # Hanging over the top-left corner: only the overlapping 2x3 part lands.
    out, mask = paste(target, patch, torch.ones(1, 4, 5), -2, -2)
    assert mask.sum() == 6 and bool(mask[0, :2, :3].all())
    # Missing the image entirely changes nothing.
    out, mask = paste(target, patch, alpha, 20, 20)
    assert torch.equal(out, target) and not mask.any()


def test_paste_labels_the_whole_footprint():
    """Defect pixels equal to the background they cover still belong to the defect."""
    target = torch.full((1, 6, 6), 0.5)
    patch = torch.full((1, 6, 6), 0.5)
    patch[0, 1, 1] = 0.9
    footprint = torch.zeros(1, 6, 6)
    footprint[0, :3, :3] = 1
    out, mask = paste(target, patch, footprint, 0, 0)
    assert torch.equal(mask, footprint)
    assert out[0, 1, 1] == pytest.approx(0.9) and torch.equal(out[:, 3:, :], target[:, 3:, :])


def test_paste_rejects_mismatched_masks():
    with pytest.raises(ValueError, match="patch mask"):
        paste(torch.rand(3, 8, 8), torch.rand(3, 4, 4), torch.ones(1, 4, 5), 0, 0)
    with pytest.raises(ValueError, match="opacities"):
        paste(torch.rand(3, 8, 8), torch.rand(3, 4, 4), torch.full((1, 4, 4), 2.0), 0, 0)


# ------------------------------------------------------------------------- poisson


def test_poisson_blend_puts_the_mask_box_centre_at_center():
    target = torch.full((3, 40, 50), 0.5)
    source = torch.full((3, 9, 11), 0.5)
    source[:, 4, 5] = 1.0  # the centre of the 9x11 box
    out, mask = poisson_blend(target, source, torch.ones(1, 9, 11), (17, 31))
    change = (out - target).abs().amax(dim=0)
    assert divmod(int(change.argmax()), 50) == (17, 31)
    _assert_changed_mask(target, out, mask)


def test_poisson_blend_keeps_texture_and_takes_the_targets_level():
    """Bright stripes cloned into a dark image keep their contrast but not their brightness."""
    target = torch.full((1, 48, 48), 0.2)
    stripes = (0.7 + 0.2 * (torch.arange(20) % 2)).float().view(1, 1, 20).expand(1, 20, 20)
    out, mask = poisson_blend(target, stripes, torch.ones(1, 20, 20), (24, 24))
    _assert_changed_mask(target, out, mask)
    inner = out[0, 18:30, 18:30]
    assert float(inner.diff(dim=1).abs().mean()) == pytest.approx(0.2, abs=0.02)
    assert float(inner.mean()) == pytest.approx(0.2, abs=0.05)  # not the stripes' 0.8


def test_poisson_blend_grayscale_and_mixed_channels():
    grey = random_image(1, 30, 30)
    out, mask = poisson_blend(
        grey, random_image(3, 10, 10, seed=3), torch.ones(1, 10, 10), (15, 15)
    )
    assert out.shape == (1, 30, 30) and mask.any()
    _assert_changed_mask(grey, out, mask)
    rgb = random_image(3, 30, 30)
    out, mask = poisson_blend(rgb, random_image(1, 10, 10, seed=3), torch.ones(1, 10, 10), (15, 15))
    assert out.shape == (3, 30, 30) and mask.any()
    _assert_changed_mask(rgb, out, mask)


def test_poisson_blend_reaches_the_image_border():
    target = random_image(3, 32, 40) * 0.3
    source = random_image(3, 12, 12, seed=7) * 0.3 + 0.7
    for center in [(0, 0), (31, 39), (0, 20), (16, 39)]:
        out, mask = poisson_blend(target, source, torch.ones(1, 12, 12), center)
        _assert_changed_mask(target, out, mask)
        assert mask[0, center[0], center[1]] == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    height=st.integers(2, 40),
    width=st.integers(2, 40),
    patch_h=st.integers(1, 30),
    patch_w=st.integers(1, 30),
    row=st.integers(-40, 80),
    col=st.integers(-40, 80),
    channels=st.sampled_from([1, 3]),
    seed=st.integers(0, 1000),
)
def test_poisson_blend_never_crashes_anywhere(
    height, width, patch_h, patch_w, row, col, channels, seed
):
    target = random_image(channels, height, width, seed=seed)
    source = random_image(channels, patch_h, patch_w, seed=seed + 1)
    mask = torch.rand((1, patch_h, patch_w), generator=torch.Generator().manual_seed(seed)) > 0.3
    out, changed = poisson_blend(target, source, mask.float(), (row, col))
    assert out.shape == target.shape
    _assert_changed_mask(target, out, changed)


def test_poisson_blend_with_an_empty_mask_changes_nothing():
    target = random_image(3, 16, 16)
    out, mask = poisson_blend(target, random_image(3, 4, 4), torch.zeros(1, 4, 4), (8, 8))
    assert torch.equal(out, target) and not mask.any()
    with pytest.raises(ValueError, match="center"):
        poisson_blend(target, random_image(3, 4, 4), torch.ones(1, 4, 4), (8,))


# ------------------------------------------------------------------------ transform


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    channels=st.sampled_from([1, 3]),
    height=st.integers(8, 72),
    width=st.integers(8, 72),
    seed=st.integers(0, 2**31),
)
def test_invariants_over_sizes_channels_and_seeds(channels, height, width, seed):
    image = random_image(channels, height, width, seed=seed % 1000)
    result = PoissonPatch()(image, seed=seed)
    assert result.image.shape == image.shape
    _assert_changed_mask(image, result.image, result.mask)
    assert result.meta["anomalous"] == bool(result.mask.any())
    json.dumps(result.meta)


def test_patches_follow_the_size_ranges():
    transform = PoissonPatch(width=(0.1, 0.2), height=(0.3, 0.4), rescale=(1.0, 1.0))
    image = random_image(3, 100, 120)
    for seed in range(10):
        params = transform(image, seed=seed).meta["params"]
        top, left, box_h, box_w = params["box"]
        assert 30 <= box_h <= 40 and 12 <= box_w <= 24
        assert 0 <= top <= 100 - box_h and 0 <= left <= 120 - box_w
        assert params["source"] == -1 and params["rescale"] == 1.0


def test_small_images_get_a_patch():
    image = random_image(3, 32, 40)
    results = [PoissonPatch()(image, seed=s) for s in range(8)]
    assert all(r.meta["anomalous"] for r in results)


def test_determinism_replay_and_batches(normal_dir):
    transform = PoissonPatch(sources=normal_dir)
    image = random_image(1, 40, 56)
    first, again = transform(image, seed=5), transform(image, seed=5)
    assert torch.equal(first.image, again.image) and torch.equal(first.mask, again.mask)
    assert first.meta["params"]["source"] >= 0
    replayed = transform.replay(image, json.loads(json.dumps(first.meta["params"])))
    assert torch.equal(replayed.image, first.image) and torch.equal(replayed.mask, first.mask)

    batch = torch.stack([random_image(3, 40, 56, seed=i) for i in range(3)])
    seeds = [7, 70, 700]
    batched = transform(batch, seeds=seeds)
    for i, seed in enumerate(seeds):
        single = transform(batch[i], seed=seed)
        assert torch.equal(batched.image[i], single.image)
        assert torch.equal(batched.mask[i], single.mask)


def test_numpy_and_pil_inputs():
    array = (random_image(3, 36, 44).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    result = PoissonPatch()(array, seed=1)
    assert result.image.dtype == np.uint8 and result.image.shape == array.shape
    assert result.mask.shape == (36, 44) and result.mask.any()
    assert np.array_equal(result.image[result.mask == 0], array[result.mask == 0])
    pil_result = PoissonPatch()(Image.fromarray(array), seed=1)
    assert isinstance(pil_result.image, Image.Image) and pil_result.image.mode == "RGB"
    assert np.array_equal(np.asarray(pil_result.image), result.image)


def test_patches_land_in_the_foreground():
    disk = torch.zeros(1, 64, 80, dtype=torch.bool)
    disk[0, 20:44, 30:60] = True
    image = torch.where(disk, 0.8, 0.1).expand(3, -1, -1) + 0.05 * random_image(3, 64, 80)
    transform = PoissonPatch(foreground="otsu")
    for seed in range(10):
        row, col = transform(image, seed=seed).meta["params"]["center"]
        assert disk[0, row, col]


def test_config_round_trip_with_a_source_folder(normal_dir):
    transform = PoissonPatch(sources=normal_dir, rescale=(0.8, 1.2))
    config = yaml.safe_load(yaml.safe_dump(transform.to_dict()))
    assert config["sources"] == str(normal_dir)
    rebuilt = from_dict(config)
    assert rebuilt == transform
    image = random_image(3, 48, 40)
    assert torch.equal(rebuilt(image, seed=3).image, transform(image, seed=3).image)
    assert from_dict(PoissonPatch().to_dict()) == PoissonPatch()


def test_in_memory_sources_work_but_do_not_serialise():
    transform = PoissonPatch(sources=TexturePool([random_image(3, 20, 20)]))
    assert transform(random_image(1, 30, 30), seed=0).meta["anomalous"]
    with pytest.raises(ValueError, match="in-memory"):
        transform.to_dict()


@pytest.mark.parametrize(
    ("kwargs", "error", "token"),
    [
        ({"sources": "/no/such/folder"}, FileNotFoundError, "/no/such/folder"),
        ({"sources": 3}, ValueError, "sources"),
        ({"width": (0.0, 0.4)}, ValueError, "positive"),
        ({"height": (0.5, 0.2)}, ValueError, "height"),
        ({"rescale": (0.0, 1.0)}, ValueError, "rescale"),
        ({"foreground": "threshold"}, ValueError, "foreground_threshold"),
        (
            {"foreground": "threshold", "foreground_threshold": "x"},
            ValueError,
            "foreground_threshold must be a number, got 'x'",
        ),
        # bool("false") is True: a string is refused rather than read as the opposite.
        ({"foreground_invert": "false"}, ValueError, "foreground_invert must be True or False"),
    ],
)
def test_bad_settings_are_rejected(kwargs, error, token):
    with pytest.raises(error, match=token):
        PoissonPatch(**kwargs)


def test_replay_rejects_foreign_parameters():
    image = random_image(3, 20, 20)
    with pytest.raises(ValueError, match="box"):
        PoissonPatch().replay(
            image, {"source": -1, "box": [15, 0, 10, 5], "rescale": 1.0, "center": [5, 5]}
        )
    with pytest.raises(ValueError, match="source"):
        PoissonPatch().replay(
            image, {"source": 2, "box": [0, 0, 5, 5], "rescale": 1.0, "center": [5, 5]}
        )
    # -1 is the image itself; any other negative index is an error, not the image too.
    with pytest.raises(ValueError, match="source must be an integer in \\[-1, -1\\], got -2"):
        PoissonPatch().replay(
            image, {"source": -2, "box": [0, 0, 5, 5], "rescale": 1.0, "center": [5, 5]}
        )
    with pytest.raises(ValueError, match="lack \\['center'\\]"):
        PoissonPatch().replay(image, {"source": -1, "box": [0, 0, 5, 5], "rescale": 1.0})


def test_foreground_threshold_is_a_plain_float():
    patch = PoissonPatch(foreground="threshold", foreground_threshold=np.float64(0.5))
    assert type(patch.foreground_threshold) is float
    assert "0.5" in yaml.safe_dump(patch.to_dict())


@pytest.mark.realdata
def test_real_free_tiles_as_sources(shared_data, tmp_path):
    free = sorted((shared_data / "mtd" / "MT_Free" / "Imgs").glob("*.jpg"))[:4]
    assert len(free) == 4, "the real data is present but MT_Free holds no images"
    sources = tmp_path / "free"
    sources.mkdir()
    for jpg in free[1:]:
        (sources / jpg.name).write_bytes(jpg.read_bytes())
    transform = PoissonPatch(sources=sources, foreground="otsu")
    target = torch.from_numpy(np.asarray(Image.open(free[0]).convert("L"), dtype=np.float32) / 255)
    target = target[None]
    for seed in range(4):
        result = transform(target, seed=seed)
        assert result.meta["anomalous"]
        _assert_changed_mask(target, result.image, result.mask)


def test_paste_refuses_a_nan_opacity():
    """A NaN opacity would change a pixel outside the returned mask."""
    opacity = torch.ones(1, 4, 4)
    opacity[0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"opacities in \[0, 1\]"):
        paste(random_image(3, 16, 16), random_image(3, 4, 4), opacity, 2, 2)


def test_texture_pool_skips_masks_kept_beside_their_images(tmp_path):
    """MTD's raw layout keeps x.png (the mask) beside x.jpg; a mask is no source image."""
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "t1.jpg")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "t1.png")
    (tmp_path / "sub").mkdir()
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / "sub" / "t2.png")
    pool = TexturePool(tmp_path)
    assert len(pool) == 2  # t1.jpg and the lone sub/t2.png
