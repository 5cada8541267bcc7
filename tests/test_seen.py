"""Seen-anomaly extension: the joint geometry helpers and SeenAnomalyPaste's contract."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from anomgen.core import from_dict
from anomgen.functional.blend import MIN_CHANGE
from anomgen.functional.geometry import (
    bbox,
    color_jitter,
    elastic_distort,
    foreground_mask,
    match_channels,
    optical_distort,
    warp_patch,
)
from anomgen.io import AnomalyPool, read_image
from anomgen.transforms.seen import RealAnomalyImage, SeenAnomalyPaste
from tests.conftest import random_image


def _disk(height: int, width: int, center: tuple[int, int], radius: float) -> torch.Tensor:
    ys = torch.arange(height).view(-1, 1)
    xs = torch.arange(width).view(1, -1)
    return (((ys - center[0]) ** 2 + (xs - center[1]) ** 2) <= radius**2)[None]


def _defect(channels: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A dark textured blob on a mid-grey 40x48 image: a stand-in for a real defect."""
    generator = torch.Generator().manual_seed(seed)
    image = 0.55 + 0.1 * torch.rand((channels, 40, 48), generator=generator)
    mask = _disk(40, 48, (18 + seed, 20 + 2 * seed), 6 + seed).float()
    image = torch.where(mask.bool(), 0.1 + 0.2 * torch.rand_like(image), image)
    return image, mask


@pytest.fixture(scope="module")
def pool() -> AnomalyPool:
    """One RGB and one grayscale defect, so both channel conversions get exercised."""
    (rgb, rgb_mask), (grey, grey_mask) = _defect(3, 0), _defect(1, 1)
    return AnomalyPool([rgb, grey], [rgb_mask, grey_mask])


def _write_pool(folder: Path, mvtec: bool = False) -> tuple[Path, Path | None]:
    """Two anomalies on disk: MTD layout (x.jpg + x.png) or MVTec (x.png + masks/x_mask.png)."""
    folder.mkdir(parents=True)
    mask_dir = folder / "masks" if mvtec else None
    if mask_dir is not None:
        mask_dir.mkdir()
    for i in range(2):
        image, mask = _defect(1 if i else 3, i)
        array = (image * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(array[:, :, 0] if i else array).save(
            folder / f"d{i}.{'png' if mvtec else 'jpg'}"
        )
        mask_png = Image.fromarray((mask[0].numpy() * 255).astype(np.uint8))
        mask_png.save(mask_dir / f"d{i}_mask.png" if mask_dir else folder / f"d{i}.png")
    return folder, mask_dir


def _assert_contract(before: torch.Tensor, after: torch.Tensor, mask: torch.Tensor) -> None:
    assert mask.shape == (1, *before.shape[-2:])
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
    inside = mask[0].bool()
    assert torch.equal(after[:, ~inside], before[:, ~inside]), "a pixel outside the mask changed"
    change = (after - before).abs().amax(dim=0)
    # A pasted defect's whole footprint is labelled, so a defect pixel may equal the
    # background it covers; but the defect as a whole must be visible.
    assert bool((change[inside] > MIN_CHANGE).any()), "nothing changed inside the mask"


# ----------------------------------------------------------------------- functional


def test_foreground_mask_finds_a_bright_disk_and_its_inverse():
    disk = _disk(48, 64, (20, 30), 12)
    image = (disk.float() * 0.8 + 0.1).expand(3, -1, -1)
    assert torch.equal(foreground_mask(image), disk)
    assert torch.equal(foreground_mask(image, invert=True), ~disk)
    assert torch.equal(foreground_mask(image[:1], "threshold", 0.5), disk)
    for level in (0.0, 0.5, 1.0):  # black too: Otsu's own level would mark none of it
        flat = torch.full((1, 8, 8), level)
        assert foreground_mask(flat).all() and not foreground_mask(flat, invert=True).any()


@pytest.mark.parametrize(
    ("kwargs", "token"),
    [
        ({"method": "kmeans"}, "kmeans"),
        ({"method": "otsu", "threshold": 0.3}, "threshold"),
        ({"method": "threshold"}, "threshold"),
        ({"method": "threshold", "threshold": 1.5}, "1.5"),
    ],
)
def test_foreground_mask_rejects_bad_settings(kwargs, token):
    with pytest.raises(ValueError, match=token):
        foreground_mask(torch.rand(1, 8, 8), **kwargs)


def test_bbox_is_tight_and_exclusive():
    mask = torch.zeros(1, 10, 12)
    mask[0, 3:6, 4:9] = 1
    mask[0, 7, 2] = 1
    assert bbox(mask) == (3, 2, 8, 9)
    with pytest.raises(ValueError, match="empty"):
        bbox(torch.zeros(1, 4, 4))


def _blob(height: int = 9, width: int = 14) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.rand((3, height, width), generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, height, width)
    mask[0, 2:7, 3:12] = 1
    mask[0, 1, 3] = 1
    return image, mask


def test_warp_patch_identity_flips_and_quarter_turn():
    image, mask = _blob()
    same_image, same_mask = warp_patch(image, mask, 0.0, 1.0)
    assert torch.allclose(same_image, image, atol=1e-6) and torch.equal(same_mask, mask)
    flipped_image, flipped_mask = warp_patch(image, mask, 0.0, 1.0, flip_h=True, flip_v=True)
    assert torch.allclose(flipped_image, image.flip(1, 2), atol=1e-6)
    assert torch.equal(flipped_mask, mask.flip(1, 2))
    # 90 degrees counter-clockwise: the canvas turns from 9x14 to 14x9, content as rot90.
    turned_image, turned_mask = warp_patch(image, mask, 90.0, 1.0)
    assert turned_image.shape == (3, 14, 9)
    assert torch.allclose(turned_image, image.rot90(1, dims=(1, 2)), atol=1e-5)
    assert torch.equal(turned_mask, mask.rot90(1, dims=(1, 2)))


def test_warp_patch_grows_the_canvas_so_nothing_is_cut():
    image, mask = _blob(20, 20)
    mask = torch.ones_like(mask)
    for angle, scale in [(45.0, 1.0), (30.0, 1.5), (-60.0, 0.5)]:
        warped_image, warped_mask = warp_patch(image, mask, angle, scale)
        side = (
            20 * scale * (abs(math.cos(math.radians(angle))) + abs(math.sin(math.radians(angle))))
        )
        assert warped_image.shape[-1] == math.ceil(round(side, 6))
        assert set(torch.unique(warped_mask).tolist()) == {0.0, 1.0}
        assert warped_mask.sum().item() == pytest.approx(400 * scale**2, rel=0.1)
        # The rotated square reaches every side of its canvas (a corner's tip is sub-pixel).
        top, left, bottom, right = bbox(warped_mask)
        height, width = warped_mask.shape[-2:]
        assert max(top, left, height - bottom, width - right) <= 1


def test_elastic_and_optical_distortions():
    image, mask = _blob(24, 30)
    calm_image, calm_mask = elastic_distort(image, mask, alpha=0.0, sigma=3.0, seed=5)
    assert torch.allclose(calm_image, image, atol=1e-6) and torch.equal(calm_mask, mask)
    first = elastic_distort(image, mask, alpha=3.0, sigma=3.0, seed=5)
    again = elastic_distort(image, mask, alpha=3.0, sigma=3.0, seed=5)
    other = elastic_distort(image, mask, alpha=3.0, sigma=3.0, seed=6)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    assert not torch.allclose(first[0], image, atol=1e-3)
    assert set(torch.unique(first[1]).tolist()) <= {0.0, 1.0}

    flat_image, flat_mask = optical_distort(image, mask, k=0.0, dx=0.0, dy=0.0)
    assert torch.allclose(flat_image, image, atol=1e-4) and torch.equal(flat_mask, mask)
    full = torch.ones(1, 24, 30)
    barrel = optical_distort(image, full, k=0.5, dx=0.0, dy=0.0)[1]
    pincushion = optical_distort(image, full, k=-0.5, dx=0.0, dy=0.0)[1]
    # Barrel: corners sample beyond the patch and fall off; pincushion magnifies it.
    assert not barrel[:, 0, 0].any() and barrel[:, 12, 15].all()
    assert pincushion.all()
    shifted = optical_distort(image, mask, k=0.3, dx=6.0, dy=0.0)[0]
    assert not torch.allclose(shifted, optical_distort(image, mask, k=0.3, dx=0.0, dy=0.0)[0])
    with pytest.raises(ValueError, match="sigma"):
        elastic_distort(image, mask, alpha=1.0, sigma=0.0, seed=0)


def test_color_jitter_and_channel_matching():
    image = random_image(3, 8, 8)
    assert torch.equal(color_jitter(image, 1.0, 1.0, 1.0), image)
    assert torch.allclose(color_jitter(image, 0.5, 1.0, 1.0), image * 0.5)
    grey = color_jitter(image, 1.0, 1.0, 0.0)
    assert torch.allclose(grey, grey[:1].expand(3, -1, -1), atol=1e-6)
    assert match_channels(image, 1).shape == (1, 8, 8)
    assert torch.equal(match_channels(image[:1], 3), image[:1].expand(3, -1, -1))


@pytest.mark.parametrize(
    "call",
    [
        lambda: warp_patch(torch.rand(3, 8, 8), torch.ones(1, 8, 9), 0.0, 1.0),
        lambda: warp_patch(torch.rand(3, 8, 8), torch.ones(1, 8, 8), 0.0, 0.0),
        lambda: warp_patch(torch.rand(2, 8, 8), torch.ones(1, 8, 8), 0.0, 1.0),
        lambda: optical_distort(torch.rand(3, 8, 8) * 2, torch.ones(1, 8, 8), 0.1, 0.0, 0.0),
        lambda: color_jitter(torch.zeros(3, 4, 4, dtype=torch.uint8), 1.0, 1.0, 1.0),
    ],
)
def test_geometry_rejects_bad_input(call):
    with pytest.raises(ValueError):
        call()


# ------------------------------------------------------------------------ transform


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    channels=st.sampled_from([1, 3]),
    height=st.integers(8, 72),
    width=st.integers(8, 72),
    seed=st.integers(0, 2**31),
    blend=st.sampled_from(["paste", "poisson"]),
)
def test_invariants_over_sizes_channels_and_seeds(pool, channels, height, width, seed, blend):
    transform = SeenAnomalyPaste(pool, blend=blend)
    image = random_image(channels, height, width, seed=seed % 1000)
    result = transform(image, seed=seed)
    assert result.image.shape == image.shape
    _assert_contract(image, result.image, result.mask)
    assert result.meta["anomalous"] == bool(result.mask.any())
    json.dumps(result.meta)  # parameters are plain values


@pytest.mark.parametrize("blend", ["paste", "poisson"])
def test_small_images_get_a_defect(pool, blend):
    transform = SeenAnomalyPaste(pool, blend=blend)
    image = random_image(3, 32, 40)
    results = [transform(image, seed=s) for s in range(8)]
    assert all(r.meta["anomalous"] for r in results)
    for result in results:
        _assert_contract(image, result.image, result.mask)


@pytest.mark.parametrize("blend", ["paste", "poisson"])
def test_determinism_replay_and_batches(pool, blend):
    transform = SeenAnomalyPaste(pool, blend=blend, distortion_probability=1.0)
    image = random_image(3, 40, 56)
    first, again = transform(image, seed=11), transform(image, seed=11)
    assert torch.equal(first.image, again.image) and torch.equal(first.mask, again.mask)
    params = json.loads(json.dumps(first.meta["params"]))
    replayed = transform.replay(image, params)
    assert torch.equal(replayed.image, first.image) and torch.equal(replayed.mask, first.mask)

    batch = torch.stack([random_image(3, 40, 56, seed=i) for i in range(4)])
    seeds = [3, 14, 15, 92]
    batched = transform(batch, seeds=seeds)
    for i, seed in enumerate(seeds):
        single = transform(batch[i], seed=seed)
        assert torch.equal(batched.image[i], single.image)
        assert torch.equal(batched.mask[i], single.mask)
        assert batched.meta[i]["params"] == single.meta["params"]


def test_every_augmentation_is_recorded(pool):
    transform = SeenAnomalyPaste(pool, distortion_probability=1.0, distortions=["optical"])
    params = transform(random_image(3, 48, 48), seed=2).meta["params"]
    assert set(params) >= {"anomaly", "flip_h", "flip_v", "angle", "scale", "center"}
    assert set(params) >= {"brightness", "contrast", "saturation", "distortion"}
    assert params["distortion"]["kind"] == "optical"
    assert 0 <= params["anomaly"] < len(pool)
    assert -90 <= params["angle"] <= 90 and 0.5 <= params["scale"] <= 1.5


def test_numpy_and_pil_inputs(pool):
    transform = SeenAnomalyPaste(pool)
    array = (random_image(3, 36, 44).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    result = transform(array, seed=4)
    assert result.image.dtype == np.uint8 and result.image.shape == array.shape
    assert result.mask.shape == (36, 44) and result.mask.dtype == np.float32
    assert result.mask.any()
    assert np.array_equal(result.image[result.mask == 0], array[result.mask == 0])

    grey = Image.fromarray(array[:, :, 0])
    pil_result = transform(grey, seed=4)
    assert isinstance(pil_result.image, Image.Image) and pil_result.image.mode == "L"
    unchanged = pil_result.mask == 0
    assert np.array_equal(np.asarray(pil_result.image)[unchanged], array[:, :, 0][unchanged])


@pytest.mark.parametrize("blend", ["paste", "poisson"])
def test_defects_land_inside_the_otsu_foreground(pool, blend):
    center, radius = (30, 50), 14
    disk = _disk(64, 80, center, radius)
    image = (disk.float() * 0.75 + 0.05).expand(3, -1, -1).clone()

    def centres(foreground: str) -> list[tuple[float, float]]:
        transform = SeenAnomalyPaste(pool, blend=blend, foreground=foreground)
        points = []
        for seed in range(20):
            result = transform(image, seed=seed)
            row, col = result.meta["params"]["center"]
            assert disk[0, row, col] or foreground == "none"
            if foreground == "otsu":
                top, left, bottom, right = bbox(result.mask)
                points.append(((top + bottom) / 2, (left + right) / 2))
            else:
                points.append((row, col))
        return points

    for row, col in centres("otsu"):
        assert math.dist((row, col), center) <= radius + 2
    # Without a foreground the same seeds land off the disk as well: the check can fail.
    assert any(not disk[0, int(r), int(c)] for r, c in centres("none"))


@pytest.mark.parametrize("blend", ["paste", "poisson"])
def test_source_position_keeps_each_defect_where_it_was(pool, blend):
    # The pool's defects are 40x48 images; on a 80x96 image their centres scale by 2.
    transform = SeenAnomalyPaste(pool, blend=blend, position="source", rotation=(0.0, 0.0))
    image = torch.full((3, 80, 96), 0.6)
    seen = set()
    for seed in range(12):
        result = transform(image, seed=seed)
        index = result.meta["params"]["anomaly"]
        seen.add(index)
        top, left, bottom, right = bbox(pool.masks[index])
        expected = ((top + bottom) / 2 * 2, (left + right) / 2 * 2)
        top, left, bottom, right = bbox(result.mask)
        assert math.dist(((top + bottom) / 2, (left + right) / 2), expected) <= 4
    assert seen == {0, 1}
    with pytest.raises(ValueError, match="position must be one of"):
        SeenAnomalyPaste(pool, position="centre")
    with pytest.raises(ValueError, match="only applies to position='random'"):
        SeenAnomalyPaste(pool, position="source", foreground="otsu")


def test_pool_with_an_empty_mask_is_rejected(tmp_path):
    folder, _ = _write_pool(tmp_path / "pool")
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(folder / "d1.png")
    with pytest.raises(ValueError, match="empty"):
        SeenAnomalyPaste(folder)


def test_missing_folders_and_masks_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        SeenAnomalyPaste(tmp_path / "nowhere")
    folder, _ = _write_pool(tmp_path / "pool")
    (folder / "d0.png").unlink()
    with pytest.raises(FileNotFoundError, match="d0"):
        SeenAnomalyPaste(folder)


@pytest.mark.parametrize("mvtec", [False, True])
def test_config_round_trip_with_a_folder_pool(tmp_path, mvtec):
    folder, mask_dir = _write_pool(tmp_path / "pool", mvtec=mvtec)
    transform = SeenAnomalyPaste(folder, masks=mask_dir, blend="poisson", foreground="otsu")
    config = yaml.safe_load(yaml.safe_dump(transform.to_dict()))
    assert config["type"] == "SeenAnomalyPaste" and config["anomalies"] == str(folder)
    rebuilt = from_dict(config)
    assert rebuilt == transform
    image = random_image(1, 48, 56)
    expected, actual = transform(image, seed=9), rebuilt(image, seed=9)
    assert torch.equal(expected.image, actual.image) and torch.equal(expected.mask, actual.mask)
    # A pool object built from a folder serialises too (as its folders).
    from_pool = SeenAnomalyPaste(AnomalyPool(folder, mask_dir), blend="poisson", foreground="otsu")
    assert torch.equal(from_dict(from_pool.to_dict())(image, seed=9).image, expected.image)


def test_config_round_trip_with_lists_of_files(tmp_path):
    folder, _ = _write_pool(tmp_path / "pool")
    images, masks = [folder / "d0.jpg", folder / "d1.jpg"], [folder / "d0.png", folder / "d1.png"]
    transform = SeenAnomalyPaste(images, masks=masks)
    config = yaml.safe_load(yaml.safe_dump(transform.to_dict()))
    assert config["anomalies"] == [str(p) for p in images]
    image = random_image(3, 40, 40)
    expected = transform(image, seed=1)
    assert torch.equal(from_dict(config)(image, seed=1).image, expected.image)
    from_pool = SeenAnomalyPaste(AnomalyPool(images, masks))
    assert torch.equal(from_dict(from_pool.to_dict())(image, seed=1).image, expected.image)
    with pytest.raises(ValueError, match="as many"):
        SeenAnomalyPaste(images, masks=masks[:1])
    with pytest.raises(ValueError, match="list of image files"):
        SeenAnomalyPaste(images)


def test_in_memory_pool_cannot_be_serialised(pool):
    with pytest.raises(ValueError, match="in-memory"):
        SeenAnomalyPaste(pool).to_dict()


@pytest.mark.parametrize(
    ("kwargs", "token"),
    [
        ({"blend": "mix"}, "blend"),
        ({"foreground": "edges"}, "foreground"),
        ({"foreground": "threshold"}, "foreground_threshold"),
        ({"foreground_threshold": 0.5}, "foreground_threshold"),
        ({"distortions": ["swirl"]}, "distortions"),
        ({"distortions": "elastic"}, "distortions"),
        ({"flip_probability": 1.5}, "flip_probability"),
        ({"scale": (0.0, 1.0)}, "scale"),
        ({"rotation": (10, -10)}, "rotation"),
        ({"elastic_sigma": 0.0}, "elastic_sigma"),
        ({"elastic_sigma": None}, "elastic_sigma must be a number, got None"),
        ({"flip_probability": None}, "flip_probability must be a number, got None"),
        ({"distortions": 3}, "distortions must be a list"),
        ({"foreground_invert": "false"}, "foreground_invert must be True or False"),
        ({"masks": "somewhere"}, "masks"),
    ],
)
def test_bad_settings_are_rejected(pool, kwargs, token):
    with pytest.raises(ValueError, match=token):
        SeenAnomalyPaste(pool, **kwargs)


def test_numpy_settings_become_plain_floats(pool):
    paste = SeenAnomalyPaste(
        pool,
        elastic_sigma=np.float32(0.25),
        foreground="threshold",
        foreground_threshold=np.float64(0.5),
    )
    assert type(paste.elastic_sigma) is float and type(paste.foreground_threshold) is float


def test_replay_names_missing_keys(pool):
    paste, image = SeenAnomalyPaste(pool), random_image(3, 40, 40)
    params = paste(image, seed=0).meta["params"]
    with pytest.raises(ValueError, match="lack \\['center'\\]"):
        paste.replay(image, {k: v for k, v in params.items() if k != "center"})
    elastic = {"kind": "elastic", "alpha": 0.05, "sigma": 0.1}
    with pytest.raises(ValueError, match="elastic distortion parameters lack \\['seed'\\]"):
        paste.replay(image, {**params, "distortion": elastic})


@pytest.mark.realdata
@pytest.mark.parametrize("blend", ["paste", "poisson"])
def test_real_blowholes_onto_a_free_tile(shared_data, tmp_path, blend):
    mtd = shared_data / "mtd"
    defects = sorted((mtd / "MT_Blowhole" / "Imgs").glob("*.jpg"))[:3]
    normal_file = sorted((mtd / "MT_Free" / "Imgs").glob("*.jpg"))[0]
    assert len(defects) == 3 and normal_file.is_file(), "the real data lacks Blowhole/Free"
    folder = tmp_path / "blowholes"
    folder.mkdir()
    for jpg in defects:
        shutil.copy(jpg, folder)
        shutil.copy(jpg.with_suffix(".png"), folder)
    transform = SeenAnomalyPaste(folder, blend=blend, foreground="otsu")
    assert len(transform._pool) == 3
    normal = read_image(normal_file)
    used = set()
    for seed in range(6):
        result = transform(normal, seed=seed)
        assert result.meta["anomalous"]
        _assert_contract(normal, result.image, result.mask)
        used.add(result.meta["params"]["anomaly"])
        # Blowholes are small: a few hundred pixels at most, never a large region.
        assert 0 < result.mask.sum() < 0.02 * normal.shape[-1] * normal.shape[-2]
    assert len(used) > 1


# ------------------------------------------------------------------ RealAnomalyImage


def test_real_anomaly_image_returns_the_defect_image_and_its_mask(pool):
    normal = torch.full((3, 40, 48), 0.9)
    transform = RealAnomalyImage(anomalies=pool, flip_probability=0.0)
    params = {"anomaly": 0, "flip_h": False, "flip_v": False}
    image, mask = transform.apply(normal, params)
    assert torch.equal(image, pool.images[0]) and torch.equal(mask, pool.masks[0])
    # grayscale defect on an RGB normal: channels converted; the normal gives only the size
    image, mask = transform.apply(torch.zeros(3, 20, 24), {**params, "anomaly": 1})
    assert image.shape == (3, 20, 24) and mask.shape == (1, 20, 24)
    assert torch.equal(image[0], image[1]) and 0 < mask.sum() < mask.numel()


def test_real_anomaly_image_flips_image_and_mask_together(pool):
    transform = RealAnomalyImage(anomalies=pool)
    straight = transform.apply(
        torch.zeros(3, 40, 48), {"anomaly": 0, "flip_h": False, "flip_v": False}
    )
    flipped = transform.apply(
        torch.zeros(3, 40, 48), {"anomaly": 0, "flip_h": True, "flip_v": True}
    )
    for a, b in zip(straight, flipped):
        assert torch.equal(a.flip([-1, -2]), b)
    result = transform(torch.zeros(3, 40, 48), seed=5)
    again = transform(torch.zeros(3, 40, 48), seed=5)
    assert torch.equal(result.image, again.image) and torch.equal(result.mask, again.mask)
    half = transform(torch.zeros(2, 1, 40, 48, dtype=torch.float16), seed=5)
    assert half.image.dtype == torch.float16 and half.image.shape == (2, 1, 40, 48)


def test_real_anomaly_image_names_a_bad_flip_probability(pool):
    with pytest.raises(ValueError, match="flip_probability must be a number, got 'x'"):
        RealAnomalyImage(pool, flip_probability="x")


def test_real_anomaly_image_from_files_round_trips_and_rejects_bad_input(tmp_path, pool):
    folder, _ = _write_pool(tmp_path / "pool")
    transform = RealAnomalyImage(anomalies=folder, flip_probability=0.25)
    rebuilt = from_dict(json.loads(json.dumps(transform.to_dict())))
    assert isinstance(rebuilt, RealAnomalyImage) and rebuilt.flip_probability == 0.25
    image = random_image(3, 32, 32)
    assert torch.equal(transform(image, seed=1).image, rebuilt(image, seed=1).image)
    with pytest.raises(ValueError, match="flip_probability"):
        RealAnomalyImage(anomalies=pool, flip_probability=1.5)
    with pytest.raises(ValueError, match="outside the pool of 2"):
        RealAnomalyImage(anomalies=pool).apply(
            image, {"anomaly": 2, "flip_h": False, "flip_v": False}
        )
    with pytest.raises(FileNotFoundError):
        RealAnomalyImage(anomalies=tmp_path / "missing")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("anomaly", 0.7, "anomaly index must be an integer"),
        ("anomaly", "0", "anomaly index must be an integer"),
        ("anomaly", True, "anomaly index must be an integer"),
        ("anomaly", 2, r"anomaly index must be an integer in \[0, 1\], got 2"),
        ("flip_h", "no", "flip_h must be True or False, got 'no'"),
        ("flip_v", 1, "flip_v must be True or False, got 1"),
    ],
)
@pytest.mark.parametrize("cls", [SeenAnomalyPaste, RealAnomalyImage])
def test_replay_checks_the_defect_index_and_flips(pool, cls, key, value, message):
    """A hand-edited index is not truncated (0.7 -> 0) or parsed, a flip not read as truthy."""
    transform, image = cls(pool), random_image(3, 40, 40)
    params = transform(image, seed=0).meta["params"]
    with pytest.raises(ValueError, match=message):
        transform.replay(image, {**params, key: value})
