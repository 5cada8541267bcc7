"""The sample contract every transform honours, checked on the Perlin texture paste and on
the combinators (strategy-specific suites check the other transforms)."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import pickle
import re

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader

from anomgen import (
    Compose,
    Crack,
    CutPaste,
    CutPasteScar,
    Normal,
    OneOf,
    PerlinTexturePaste,
    RandomApply,
    SomeOf,
    SynthesisDataset,
    TexturePool,
    from_dict,
)
from anomgen.core import AnomalyTransform, derive_seed, make_generator
from tests.conftest import random_image


def _flat_textured_pool() -> TexturePool:
    checker = (torch.arange(64).view(1, 64) // 4 + torch.arange(64).view(64, 1) // 4) % 2
    return TexturePool([checker.float().expand(3, 64, 64).clone()])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    channels=st.sampled_from([1, 3]),
    height=st.integers(8, 96),
    width=st.integers(8, 96),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
    seed=st.integers(0, 2**31),
)
def test_invariants(channels, height, width, dtype, seed):
    transform = PerlinTexturePaste(textures=_flat_textured_pool())
    image = random_image(channels, height, width, seed % 1000).to(dtype)
    result = transform(image, seed=seed)
    mask = result.mask
    assert result.image.dtype == dtype and mask.dtype == dtype
    assert result.image.shape == image.shape and mask.shape == (1, height, width)
    assert mask.min() >= 0 and mask.max() <= 1
    outside = (mask == 0).expand_as(image)
    assert torch.equal(result.image[outside], image[outside])
    if result.meta["anomalous"]:
        inside = (mask > 0).expand_as(image)
        assert (result.image[inside] - image[inside]).abs().max() > 0
    else:
        assert mask.sum() == 0
    assert result.meta["strategy"] == "PerlinTexturePaste"
    json.dumps(result.meta)  # parameters are plain values


def test_texture_is_really_visible():
    """A checkerboard texture on a flat grey image changes masked pixels a lot, on every scale.

    A public PRN re-implementation mixed uint8 and [0, 1] images here and the texture vanished.
    """
    transform = PerlinTexturePaste(textures=_flat_textured_pool(), n_augmenters=0)
    grey = torch.full((3, 64, 64), 0.5)
    changes = []
    for seed in range(20):
        result = transform(grey, seed=seed)
        inside = result.mask[0] > 0
        beta = result.meta["params"]["beta"]
        # The texture is 0 or 1: every masked pixel moves by (1 - beta) * 0.5 from grey.
        changes.append((result.image[:, inside] - 0.5).abs().mean().item() / (0.5 * (1 - beta)))
    assert np.allclose(changes, 1.0, atol=1e-5)


def test_self_texture_without_pool():
    image = random_image(3, 48, 48)
    result = PerlinTexturePaste()(image, seed=1)
    assert result.meta["params"]["texture"] == -1
    assert result.meta["anomalous"]


def test_seed_determinism_and_replay():
    transform = PerlinTexturePaste(textures=_flat_textured_pool())
    image = random_image(3, 64, 64)
    a, b = transform(image, seed=7), transform(image, seed=7)
    assert torch.equal(a.image, b.image) and a.meta == b.meta
    replayed = transform.replay(image, json.loads(json.dumps(a.meta["params"])))
    assert torch.equal(replayed.image, a.image) and torch.equal(replayed.mask, a.mask)
    assert not torch.equal(transform(image, seed=8).image, a.image)


def test_batch_equals_single_calls():
    transform = OneOf([Normal(), PerlinTexturePaste(textures=_flat_textured_pool())])
    batch = torch.stack([random_image(3, 40, 56, seed=i) for i in range(6)])
    seeds = [11, 12, 13, 14, 15, 16]
    together = transform(batch, seeds=seeds)
    assert together.image.shape == batch.shape and together.mask.shape == (6, 1, 40, 56)
    for i in range(6):
        alone = transform(batch[i], seed=seeds[i])
        assert torch.equal(alone.image, together.image[i])
        assert alone.meta == together.meta[i]


def test_numpy_and_pil_round_trip():
    transform = PerlinTexturePaste(textures=_flat_textured_pool())
    rgb = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    out = transform(rgb, seed=0)
    assert isinstance(out.image, np.ndarray) and out.image.dtype == np.uint8
    assert out.image.shape == rgb.shape and out.mask.shape == (40, 50)
    gray = rgb[:, :, 0]
    assert transform(gray, seed=0).image.shape == gray.shape
    pil = transform(Image.fromarray(gray), seed=0)
    assert isinstance(pil.image, Image.Image) and pil.image.mode == "L"
    assert np.array_equal(np.asarray(pil.image), transform(gray, seed=0).image)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(2, 8, 8), "C in"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), "float"),
        (torch.full((3, 8, 8), 2.0), r"\[0, 1\]"),
        (np.zeros((8, 8, 3), dtype=np.float32), "uint8"),
        ("image.png", "unsupported"),
    ],
)
def test_bad_input_is_rejected(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        Normal()(bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_device():
    image = random_image(3, 64, 64).cuda()
    result = PerlinTexturePaste(textures=_flat_textured_pool())(image, seed=0)
    assert result.image.is_cuda and result.mask.is_cuda


def test_combinators():
    paste = PerlinTexturePaste(textures=_flat_textured_pool())
    image = random_image(3, 32, 32)
    never = OneOf([Normal(), paste], weights=[1, 0])
    assert all(not never(image, seed=s).meta["anomalous"] for s in range(10))
    always = RandomApply(paste, p=1.0)
    assert all(always(image, seed=s).meta["anomalous"] for s in range(10))
    both = Compose([paste, paste])
    result = both(image, seed=3)
    assert result.meta["strategy"] == "PerlinTexturePaste+PerlinTexturePaste"
    some = SomeOf([paste, Normal()], n=(2, 2))
    assert len(some(image, seed=1).meta["params"]["steps"]) == 2
    # A 50/50 mix is about half anomalous.
    mix = OneOf([Normal(), paste])
    share = np.mean([mix(image, seed=s).meta["anomalous"] for s in range(200)])
    assert 0.35 < share < 0.65


def test_combinator_errors():
    with pytest.raises(ValueError, match="weights"):
        OneOf([Normal()], weights=[1, 2])
    with pytest.raises(ValueError, match="at least one"):
        Compose([])
    with pytest.raises(ValueError, match="p must"):
        RandomApply(Normal(), p=2)
    with pytest.raises(ValueError, match="unknown transform"):
        from_dict({"type": "Nope"})
    with pytest.raises(ValueError, match="has no parameter"):
        from_dict({"type": "Normal", "bogus": 1})


def test_dict_round_trip_through_yaml(texture_dir):
    transform = OneOf(
        [
            Normal(),
            RandomApply(PerlinTexturePaste(textures=texture_dir, opacity=(0.1, 0.5)), p=0.7),
        ],
        weights=[1, 3],
    )
    config = yaml.safe_load(yaml.safe_dump(transform.to_dict()))
    rebuilt = from_dict(config)
    assert rebuilt.to_dict() == transform.to_dict()
    image = random_image(3, 40, 40)
    assert torch.equal(rebuilt(image, seed=5).image, transform(image, seed=5).image)


def test_dataset_is_independent_of_workers(normal_dir):
    transform = OneOf([Normal(), PerlinTexturePaste()])
    dataset = SynthesisDataset(normal_dir, transform, size=32, seed=3)

    def collect(workers: int):
        loader = DataLoader(dataset, batch_size=2, num_workers=workers)
        return torch.cat([b["image"] for b in loader]), [s for b in loader for s in b["strategy"]]

    single, strategies = collect(0)
    multi, strategies_multi = collect(2)
    assert torch.equal(single, multi) and strategies == strategies_multi
    item = dataset[1]
    assert item["image"].shape == (1, 32, 32) and item["mask"].shape == (1, 32, 32)
    assert torch.equal(dataset[(1, 0)]["image"], item["image"])
    assert item["label"].item() in (0.0, 1.0)


def test_set_epoch_reaches_persistent_workers(normal_dir):
    """Persistent DataLoader workers keep their copy of the dataset between epochs: each
    epoch must still match what a loader without workers gives."""
    transform = OneOf([Normal(), PerlinTexturePaste()])

    def epochs(workers: int) -> list[torch.Tensor]:
        dataset = SynthesisDataset(normal_dir, transform, size=32, seed=3)
        loader = DataLoader(
            dataset, batch_size=2, num_workers=workers, persistent_workers=workers > 0
        )
        images = []
        for epoch in range(3):
            dataset.set_epoch(epoch)
            images.append(torch.cat([batch["image"] for batch in loader]))
        return images

    single, persistent = epochs(0), epochs(2)
    assert not torch.equal(single[0], single[1])
    for alone, with_workers in zip(single, persistent):
        assert torch.equal(alone, with_workers)
    dataset = SynthesisDataset(normal_dir, transform, seed=3)
    for epoch in (5, 2**64 - 1):  # the whole seed range, beyond int64
        dataset.set_epoch(epoch)
        assert dataset.epoch == epoch and type(dataset.epoch) is int


@pytest.mark.parametrize("duplicate", [copy.deepcopy, lambda d: pickle.loads(pickle.dumps(d))])
def test_copied_dataset_epoch_reaches_forked_workers(normal_dir, duplicate):
    """A deep copy or unpickled dataset gets its own epoch, in shared memory again: forked
    persistent workers would otherwise keep their copy-on-write view of epoch 0."""
    original = SynthesisDataset(
        normal_dir, OneOf([Normal(), PerlinTexturePaste()]), size=32, seed=3
    )
    dataset = duplicate(original)
    loader = DataLoader(
        dataset,
        batch_size=2,
        num_workers=1,
        persistent_workers=True,
        multiprocessing_context="fork",
    )
    next(iter(loader))  # workers start at epoch 0
    dataset.set_epoch(1)
    assert original.epoch == 0
    expected = torch.stack([dataset[i]["image"] for i in range(2)])
    assert torch.equal(next(iter(loader))["image"], expected)


def test_dataset_items_are_seeded_by_seed_epoch_and_index(normal_dir):
    """Item i of epoch e is the transform drawn with derive_seed(seed, e, i): set_epoch gives
    fresh samples, and an (index, epoch) key reproduces any epoch's item."""
    transform = OneOf([Normal(), PerlinTexturePaste()])
    dataset = SynthesisDataset(normal_dir, transform, size=32, seed=3)
    first = [dataset[i]["image"] for i in range(len(dataset))]
    dataset.set_epoch(1)
    for i in range(len(dataset)):
        expected = transform(dataset.load(i), seed=derive_seed(3, 1, i))
        assert torch.equal(dataset[i]["image"], expected.image)
        assert torch.equal(dataset[(i, 1)]["image"], expected.image)
        assert torch.equal(dataset[(i, 0)]["image"], first[i])
    assert any(not torch.equal(dataset[i]["image"], first[i]) for i in range(len(dataset)))


def test_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no images"):
        SynthesisDataset(tmp_path, Normal())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SynthesisDataset(tmp_path / "missing", Normal())


def _anomaly_folder(root) -> str:
    folder = root / "anomalies"
    folder.mkdir()
    for i in range(2):
        image = np.full((40, 40), 30 + 100 * i, np.uint8)
        mask = np.zeros((40, 40), np.uint8)
        mask[10:25, 12:30] = 255
        Image.fromarray(image).save(folder / f"d{i}.jpg")
        Image.fromarray(mask).save(folder / f"d{i}.png")
    return str(folder)


@pytest.mark.parametrize("name", ["draem", "cutpaste", "prn"])
def test_presets_round_trip(name, tmp_path, texture_dir):
    from anomgen import build_preset

    folders = {
        "draem": {"textures": texture_dir},
        "cutpaste": {},
        "prn": {"textures": texture_dir, "anomalies": _anomaly_folder(tmp_path)},
    }[name]
    transform = build_preset(name, **folders)
    rebuilt = from_dict(yaml.safe_load(yaml.safe_dump(transform.to_dict())))
    image = random_image(1, 48, 48)
    for seed in range(6):
        a, b = transform(image, seed=seed), rebuilt(image, seed=seed)
        assert torch.equal(a.image, b.image) and a.meta == b.meta


def test_unknown_preset_and_missing_anomalies():
    from anomgen import build_preset

    with pytest.raises(ValueError, match="unknown preset"):
        build_preset("nope")
    with pytest.raises(ValueError, match="needs real anomalies"):
        build_preset("prn")


def test_preset_rejects_folders_it_does_not_use(texture_dir):
    from anomgen import build_preset

    with pytest.raises(ValueError, match="cutpaste preset does not use textures"):
        build_preset("cutpaste", textures=texture_dir)
    with pytest.raises(ValueError, match="draem preset does not use anomalies or masks"):
        build_preset("draem", anomalies="defects", masks="masks")


def test_retries_keep_the_mix_proportions():
    """A strategy that often comes out empty is drawn again, not swapped for another one."""
    rare = PerlinTexturePaste(threshold=0.8)  # empty for many draws on a small image
    mix = OneOf([Normal(), rare])
    image = random_image(1, 32, 32)
    retried = 0
    for seed in range(60):
        first = mix.sample_params(image, make_generator(seed))
        result = mix(image, seed=seed)
        assert result.meta["params"]["index"] == first["index"]
        retried += result.meta["params"] != first
    assert retried > 0  # the retry path was exercised
    coin = RandomApply(rare, p=0.5)
    for seed in range(30):
        first = coin.sample_params(image, make_generator(seed))
        assert coin(image, seed=seed).meta["params"]["applied"] == first["applied"]


def test_uint8_samples_labelled_anomalous_really_changed():
    """The label must hold after the output is rounded to 8 bits, as numpy and PIL get it."""
    flat = np.full((64, 64), 128, np.uint8)
    for transform in (CutPaste(), CutPasteScar(), PerlinTexturePaste()):
        for seed in range(40):
            result = transform(flat, seed=seed)
            changed = result.image != flat
            if result.meta["anomalous"]:
                assert (changed & (result.mask > 0)).any(), (transform.name, seed)


@pytest.mark.parametrize("seed", [1.5, True, "3", -1, 2**64, None])
def test_a_seed_is_a_non_negative_int_for_one_image_and_a_batch(seed):
    image = random_image(3, 32, 32, seed=0)
    batch = torch.stack([image, image])
    if seed is None:  # drawn from torch's global RNG: the next test
        assert CutPaste()(image, seed=None).image.shape == image.shape
        return
    message = rf"seed must be an int in \[0, 2\*\*64\), got {re.escape(repr(seed))}$"
    for images in (image, batch):
        with pytest.raises(ValueError, match=message):
            CutPaste()(images, seed=seed)
    with pytest.raises(ValueError, match="seed must be an int"):
        make_generator(seed)


def test_unseeded_calls_draw_from_torchs_global_rng():
    """``seed=None`` is not OS entropy (docs/anomgen.md, "Randomness"): ``torch.manual_seed``
    makes unseeded calls repeat, as with torchvision's random transforms."""
    image = random_image(3, 32, 32, seed=0)
    batch = torch.stack([image, image])
    mix = OneOf([CutPaste(), CutPasteScar()])
    results = []
    for _ in range(2):
        torch.manual_seed(7)
        results.append((mix(image), mix(batch), make_generator(None).initial_seed()))
    (one, many, generator_seed), (one_again, many_again, generator_seed_again) = results
    assert torch.equal(one.image, one_again.image) and one.meta == one_again.meta
    assert torch.equal(many.image, many_again.image) and many.meta == many_again.meta
    assert generator_seed == generator_seed_again
    # The draw advances the global RNG: the next unseeded call differs.
    assert make_generator(None).initial_seed() != generator_seed


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        ([1.5, 2.5], r"seeds\[0\] must be an int in \[0, 2\*\*64\), got 1.5"),
        ([0, True], r"seeds\[1\] must be an int .* got True"),
        ([-1, 0], r"seeds\[0\] must be an int .* got -1"),
        ([0, None], r"seeds\[1\] must be an int .* got None"),
        ([], r"seeds must be a non-empty sequence of ints, got \[\]"),
        ("01", "seeds must be a non-empty sequence of ints, got '01'"),
        ({0, 1}, "seeds must be a non-empty sequence of ints"),
        ([0], "got 1 seeds for a batch of 2"),
    ],
)
def test_batch_seeds_are_non_negative_ints_one_per_image(seeds, message):
    batch = torch.stack([random_image(3, 32, 32, seed=i) for i in range(2)])
    with pytest.raises(ValueError, match=message):
        CutPaste()(batch, seeds=seeds)


def test_numpy_integer_seeds_are_seeds():
    image = random_image(3, 32, 32, seed=0)
    batch = torch.stack([image, image])
    assert torch.equal(CutPaste()(image, seed=np.int64(4)).image, CutPaste()(image, seed=4).image)
    by_numpy = CutPaste()(batch, seeds=np.array([4, 5])).image
    assert torch.equal(by_numpy, CutPaste()(batch, seeds=[4, 5]).image)
    assert derive_seed(np.uint64(3), 1) == derive_seed(3, 1)
    with pytest.raises(ValueError, match=r"seed keys must be ints .* got \(1.5, 0\)"):
        derive_seed(1.5, 0)


def test_a_seeded_batch_draws_sample_i_with_derive_seed():
    """With only ``seed``, sample i of a batch is the image alone drawn with
    derive_seed(seed, i): the samples of a batch of copies differ, and each can be redone."""
    transform = PerlinTexturePaste(textures=_flat_textured_pool())
    batch = random_image(3, 32, 32)[None].repeat(3, 1, 1, 1)
    together = transform(batch, seed=5)
    for i in range(3):
        alone = transform(batch[i], seed=derive_seed(5, i))
        assert torch.equal(alone.image, together.image[i]) and alone.meta == together.meta[i]
    assert together.meta[0]["params"] != together.meta[1]["params"]


def test_batch_retries_draw_from_each_samples_own_generator():
    """A sample drawn again after an empty mask uses its own generator, so it is the same
    whether it was synthesized alone or anywhere in a batch."""
    rare = PerlinTexturePaste(threshold=0.8)  # empty for many draws on a small image
    batch = torch.stack([random_image(1, 32, 32, seed=i) for i in range(8)])
    seeds = list(range(100, 108))
    together = rare(batch, seeds=seeds)
    retried = [
        i
        for i in range(1, 8)
        if together.meta[i]["params"] != rare.sample_params(batch[i], make_generator(seeds[i]))
    ]
    assert retried  # a sample other than the first was drawn again
    for i in range(8):
        alone = rare(batch[i], seed=seeds[i])
        assert torch.equal(alone.image, together.image[i]) and alone.meta == together.meta[i]


@dataclasses.dataclass
class _InvisibleChange(AnomalyTransform):
    """Marks the whole image but changes nothing: no anomaly, whatever the mask says."""

    def sample_params(self, image, generator):
        return {}

    def apply(self, image, params):
        return image.clone(), image.new_ones((1, *image.shape[1:]))


def test_a_mask_over_unchanged_pixels_is_cleared_and_labelled_normal():
    """The mask is a promise that the pixels changed: one that marks nothing visible is emptied
    (alone, in a batch, and for 8-bit input) and the sample is labelled normal."""
    invisible = _InvisibleChange()
    single = invisible(random_image(3, 16, 16), seed=0)
    assert not single.meta["anomalous"] and single.mask.sum() == 0
    batch = invisible(torch.stack([random_image(1, 16, 16, seed=i) for i in range(3)]), seed=0)
    assert not any(meta["anomalous"] for meta in batch.meta) and batch.mask.sum() == 0
    flat = invisible(np.full((16, 16), 128, np.uint8), seed=0)
    assert not flat.meta["anomalous"] and not flat.mask.any()


def test_a_batch_of_one_is_seeded_like_any_batch():
    batch = random_image(3, 32, 32)[None].repeat(2, 1, 1, 1)
    transform = PerlinTexturePaste()
    one, two = transform(batch[:1], seed=5), transform(batch, seed=5)
    assert torch.equal(one.image[0], two.image[0]) and one.meta[0] == two.meta[0]


def test_config_and_argument_errors_are_clear():
    with pytest.raises(ValueError, match=r"SeenAnomalyPaste needs parameter\(s\) \['anomalies'\]"):
        from_dict({"type": "SeenAnomalyPaste"})
    with pytest.raises(ValueError, match="p must be a number"):
        RandomApply(Normal(), p="often")
    with pytest.raises(ValueError, match="p must be a number, got '0.25'"):
        RandomApply(Normal(), p="0.25")  # text that looks like a number is not parsed
    with pytest.raises(ValueError, match="n_augmenters must be an integer"):
        PerlinTexturePaste(n_augmenters=2.7)
    assert PerlinTexturePaste(n_augmenters=np.int64(2)).n_augmenters == 2
    image = random_image(1, 32, 32)
    meta = PerlinTexturePaste()(image, seed=0).meta
    with pytest.raises(ValueError, match="replay takes meta\\['params'\\]"):
        PerlinTexturePaste().replay(image, meta)


def test_real_anomaly_image_declares_it_replaces_the_ground():
    from anomgen.transforms.seen import RealAnomalyImage

    assert RealAnomalyImage.preserves_outside is False


def test_empty_batch_and_bad_functional_input_are_named():
    from anomgen.functional.cutpaste import cut_paste

    with pytest.raises(ValueError, match="the batch is empty"):
        PerlinTexturePaste()(torch.rand(0, 3, 16, 16), seed=0)
    with pytest.raises(ValueError, match=r"finite values in \[0, 1\]"):
        cut_paste(torch.rand(3, 16, 16) * 2, (0, 0, 4, 4), (8, 8, 4, 4))
    with pytest.raises(ValueError, match=r"C in \{1,3\}"):
        cut_paste(torch.rand(4, 16, 16), (0, 0, 4, 4), (8, 8, 4, 4))


def test_synthesis_dataset_refuses_seeds_it_would_truncate():
    from anomgen import Normal, SynthesisDataset

    images = [torch.rand(3, 8, 8)]
    for bad in (1.5, -1, True, "3"):
        with pytest.raises(ValueError, match="seed must be an int"):
            SynthesisDataset(images, Normal(), seed=bad)
    dataset = SynthesisDataset(images, Normal(), seed=np.int64(4))
    assert dataset.seed == 4 and type(dataset.seed) is int
    with pytest.raises(ValueError, match="epoch must be an int"):
        dataset.set_epoch(0.5)


_WRONG_TYPES = [3, None, "x", [], [1, 2, 3], {}, True, math.nan, [None], {"type": 3}, ["a", "b"]]


def test_config_values_of_the_wrong_type_are_value_errors(tmp_path):
    """YAML that parses but holds the wrong types must give a clear error (the CLI catches
    ValueError and missing folders), never a TypeError from deep inside a constructor."""
    from anomgen.core import registered_transforms

    anomalies = _anomaly_folder(tmp_path)
    normal = [{"type": "Normal"}]
    base = {
        "Compose": {"transforms": normal},
        "OneOf": {"transforms": normal},
        "SomeOf": {"transforms": normal},
        "RandomApply": {"transform": normal[0]},
        "SeenAnomalyPaste": {"anomalies": anomalies},
        "RealAnomalyImage": {"anomalies": anomalies},
    }
    tried = 0
    for name, cls in registered_transforms().items():
        for field in dataclasses.fields(cls):
            for value in _WRONG_TYPES if field.init else ():
                config = {"type": name, **base.get(name, {}), field.name: value}
                tried += 1
                try:
                    from_dict(config)
                except (ValueError, FileNotFoundError) as error:
                    # The error says which setting or value is wrong.
                    message = str(error)
                    named = field.name in message or str(value) in message
                    empty = value == [] and "at least one transform" in message
                    assert named or empty, (name, field.name, value, message)
    assert tried > 500  # every registered transform's settings were tried


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"type": ["CutPaste"]}, r"unknown transform \['CutPaste'\]"),
        ({"type": "OneOf", "transforms": 3}, "transforms must be a list of transforms, got 3"),
        ({"type": "RandomApply", "transform": [1]}, "transform must hold anomgen transforms"),
        ({"type": "OneOf", "transforms": [{"type": "Normal"}], "weights": 3}, "weights must be"),
        ({"type": "SomeOf", "transforms": [{"type": "Normal"}], "n": 1}, r"n must be a \(min"),
    ],
)
def test_config_type_errors_name_the_parameter(config, message):
    with pytest.raises(ValueError, match=message):
        from_dict(config)


@pytest.mark.parametrize("weight", [math.nan, math.inf, True])
def test_one_of_weights_are_finite_numbers(weight):
    with pytest.raises(ValueError, match=f"weights must be a finite number .* got {weight!r}"):
        OneOf([Normal(), CutPaste()], weights=[1, weight])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SomeOf([Normal(), CutPaste()], n=(0.5, 1.9)), r"n must hold integers"),
        (lambda: SomeOf([Normal(), CutPaste()], n=[1, 1, 1]), r"n must be a \(min, max\) pair"),
        (lambda: RandomApply(CutPaste(), p=True), "p must be a finite number .* got True"),
        # Text that looks like a number is refused, not parsed (or iterated character by
        # character into a range: "02" used to become (0, 2)).
        (lambda: RandomApply(CutPaste(), p="0.5"), "p must be a number, got '0.5'"),
        (lambda: Crack(branches="02"), r"branches must be a \(min, max\) pair of numbers"),
        (lambda: CutPaste(aspect_ratio="13"), r"aspect_ratio must be a \(min, max\) pair"),
        (lambda: CutPaste(aspect_ratio=("1", 3)), r"aspect_ratio must be a \(min, max\) pair"),
        (lambda: PerlinTexturePaste(threshold="0.5"), "threshold must be a number"),
        (lambda: Crack(thickness=(1.0, 3.0)), "thickness must hold integers"),
    ],
)
def test_combinator_settings_are_not_silently_coerced(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("size", "message"),
    [
        (0, "got 0"),
        (-5, "got -5"),
        (1.5, "got 1.5"),
        (True, "got True"),
        ("64", "got '64'"),
        ((64,), r"got \(64,\)"),
    ],
)
def test_dataset_size_is_checked_when_built(size, message):
    with pytest.raises(ValueError, match=f"size must be an int.* {message}"):
        SynthesisDataset([torch.rand(3, 8, 8)], Normal(), size=size)


def test_dataset_sources_channels_and_keys():
    with pytest.raises(ValueError, match=r"images\[0\] is a ndarray"):
        SynthesisDataset([np.zeros((8, 8, 3), np.uint8)], Normal())
    with pytest.raises(ValueError, match="channels must be"):
        SynthesisDataset([torch.rand(3, 8, 8)], Normal(), channels=2)
    # channels converts tensors as it converts files.
    dataset = SynthesisDataset([torch.rand(1, 8, 8)], Normal(), size=(6, 8), channels=3)
    assert dataset[0]["image"].shape == (3, 6, 8)
    assert SynthesisDataset([torch.rand(3, 8, 8)], Normal(), channels=1)[0]["image"].shape[0] == 1
    with pytest.raises(ValueError, match=r"index or an \(index, epoch\) pair, got \(0, 1, 2\)"):
        dataset[(0, 1, 2)]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"index": -1, "params": {}}, r"index must be an integer in \[0, 1\], got -1"),
        ({"index": 9, "params": {}}, r"index must be an integer in \[0, 1\], got 9"),
        ({}, r"OneOf parameters lack \['index', 'params'\]"),
        ({"index": 1, "params": {}}, r"CutPaste parameters lack \['box_src'"),
    ],
)
def test_replay_checks_one_of_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        OneOf([Normal(), CutPaste()]).replay(random_image(3, 16, 16), params)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"texture": 1}, r"texture must be an integer in \[-1, 0\], got 1"),
        ({"texture": -2}, r"texture must be an integer in \[-1, 0\], got -2"),
        ({"beta": 5}, "beta must be a finite number in .* got 5"),
    ],
)
def test_replay_checks_perlin_texture_parameters(edit, message):
    paste, image = PerlinTexturePaste(textures=_flat_textured_pool()), random_image(3, 16, 16)
    params = {**paste(image, seed=0).meta["params"], **edit}
    with pytest.raises(ValueError, match=message):
        paste.replay(image, params)


def test_replay_checks_combinator_steps():
    image, paste = random_image(3, 16, 16), CutPaste()
    params = Compose([paste, paste])(image, seed=0).meta["params"]
    with pytest.raises(ValueError, match="steps must be a list of 2"):
        Compose([paste, paste]).replay(image, {"steps": params["steps"][:1]})
    with pytest.raises(ValueError, match=r"step index must be an integer in \[1, 1\], got 0"):
        SomeOf([paste, paste]).replay(image, {"steps": [[0, params["steps"][0]]] * 2})
    with pytest.raises(ValueError, match="applied must be True or False"):
        RandomApply(paste).replay(image, {"applied": "yes", "params": {}})


def test_register_keeps_names_bound_and_takes_dataclass_transforms():
    from anomgen import register
    from anomgen.core import AnomalyTransform, registered_transforms

    class Plain(AnomalyTransform):
        pass

    with pytest.raises(ValueError, match="Plain must be a dataclass"):
        register(Plain)
    with pytest.raises(ValueError, match="an AnomalyTransform subclass"):
        register(dataclasses.make_dataclass("Loose", []))
    # A user's class must not silently replace a built-in (configs would build it instead).
    with pytest.raises(ValueError, match="'CutPaste' is already registered"):
        register(dataclasses.make_dataclass("CutPaste", [], bases=(AnomalyTransform,)))
    assert registered_transforms()["CutPaste"] is CutPaste
    assert register(Normal) is Normal  # registering the same class again is harmless


def test_to_dict_holds_plain_values_for_numpy_settings():
    """numpy scalars become plain floats and ints, so yaml.safe_dump takes the config."""
    paste = PerlinTexturePaste(threshold=np.float64(0.4), n_augmenters=np.int64(2))
    config = paste.to_dict()
    assert type(config["threshold"]) is float and type(config["n_augmenters"]) is int
    mix = OneOf([paste, Normal()], weights=np.array([1.0, 2.0]))
    assert from_dict(yaml.safe_load(yaml.safe_dump(mix.to_dict()))).to_dict() == mix.to_dict()
    assert SomeOf([paste, Normal()], n=(np.int64(1), np.int64(2))).n == (1, 2)


def test_derive_seed_guarantee_is_as_documented():
    """Same-length keys below 2**32 are told apart; the documented coincidences stay (they
    are SeedSequence's, and changing them would change every published stream)."""
    keys = [(s, e, i) for s in (0, 1, 2**32 - 1) for e in range(4) for i in range(50)]
    assert len({derive_seed(*k) for k in keys}) == len(keys)
    assert derive_seed(7) == derive_seed(7, 0) == derive_seed(7, 0, 0)
    assert derive_seed(2**32, 0) == derive_seed(0, 1)
    # Pinned values: a change to the mixing would silently change every published stream.
    assert derive_seed(0) == 6375474604893067239
    assert derive_seed(0, 1) == 8514611595815388268
    assert derive_seed(3, 1, 2) == 3479375443970694476


@pytest.mark.parametrize(
    ("source", "kwargs", "message"),
    [
        # Resizing or converting channels clamps: a 0..255 image would come out white.
        (torch.rand(3, 8, 8) * 255, {"size": 4}, r"images\[0\] must be float .* got values in"),
        (torch.rand(3, 8, 8) * 255, {"channels": 1}, r"images\[0\] must be float .* got values"),
        (torch.rand(1, 3, 8, 8), {}, r"images\[0\] must be a \(C,H,W\) tensor .* \(1, 3, 8, 8\)"),
        (torch.rand(2, 8, 8), {"channels": 1}, r"images\[0\] must be a \(C,H,W\) .* \(2, 8, 8\)"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), {"size": 4}, r"images\[0\] .* torch.uint8"),
        (torch.rand(3, 0, 8), {"size": 4}, r"images\[0\] is empty: \(3, 0, 8\)"),
    ],
)
def test_dataset_tensor_sources_are_checked_when_built(source, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SynthesisDataset([source], Normal(), **kwargs)


def test_config_keys_of_mixed_types_are_a_value_error():
    """YAML keys may be ints; naming them must not fail on sorting str against int."""
    with pytest.raises(ValueError, match=r"Normal has no parameter\(s\) \[1, 'a'\]"):
        from_dict({"type": "Normal", 1: "x", "a": "y"})
