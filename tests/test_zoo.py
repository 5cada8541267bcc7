"""Model zoo: entries, create_model / train_config overrides, checkpoint loading."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import prn_model
from anomgen import Normal
from prn_model import zoo
from prn_model.network import PRN, PRNConfig
from prn_model.train import DATASET_LOCATIONS, TrainConfig, _save_checkpoint, load_checkpoint

EXPECTED_MODELS = [
    "prn_lite0",
    "prn_lite0_mtd",
    "prn_lite0_mtd_band",
    "prn_lite0_mtd_bank",
    "prn_lite0_mtd_finetuned",
    "prn_lite0_mtd_inplace",
    "prn_lite0_mtd_normalised",
    "prn_lite0_mtd_original",
    "prn_lite0_mtd_unseen",
    "prn_lite0_mtd_unseen_finetuned",
    "prn_resnet18_mvtec",
    "prn_wide_resnet50_2",
]


def _images(n: int = 3, channels: int = 3, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, channels, size, size), generator=torch.Generator().manual_seed(seed))


def test_list_models_and_entries(tmp_path):
    assert zoo.list_models() == EXPECTED_MODELS
    assert prn_model.list_models() == EXPECTED_MODELS  # exported lazily by the package
    paper = zoo.get_entry("prn_resnet18_mvtec")
    assert paper.model["backbone"] == "resnet18" and paper.model["image_size"] == 256
    assert paper.train["n_anomalies"] == 10
    assert zoo.get_entry("prn_lite0_mtd").train["dataset"] == "mtd"
    tuned = zoo.train_config("prn_lite0_mtd_inplace", root=str(tmp_path))
    assert (tuned.seen_position, tuned.seen_rotation, tuned.attention_divisors) == (
        "source",
        [0.0, 0.0],
        [1],
    )
    banked = zoo.train_config("prn_lite0_mtd_bank", root=str(tmp_path))
    assert banked.memory_bank_size == 8192 and banked.memory_bank_weight == 0.5
    assert zoo.create_model("prn_lite0_mtd_bank", pretrained=False).memory_bank is not None
    banded = zoo.train_config("prn_lite0_mtd_band", root=str(tmp_path))
    assert banded.simulated == ["texture", "scar", "band"]
    assert banded.band_sides == ["top", "bottom"]
    originals = zoo.train_config("prn_lite0_mtd_original", root=str(tmp_path))
    assert originals.original_weight == 0.5 and originals.simulated == banded.simulated
    normalised = zoo.train_config("prn_lite0_mtd_normalised", root=str(tmp_path))
    assert normalised.model_config().intensity_normalisation == "image"
    assert normalised.original_weight == 0.5
    model = zoo.create_model("prn_lite0_mtd_normalised", pretrained=False)
    assert model.config.intensity_normalisation == "image"
    unseen = zoo.train_config("prn_lite0_mtd_unseen", root=str(tmp_path))
    assert (unseen.split_by, unseen.prototype_share, unseen.prototype_ratio) == ("group", 0.5, 0.2)
    assert (
        unseen.model_config() == zoo.create_model("prn_lite0_mtd_unseen", pretrained=False).config
    )
    for name in EXPECTED_MODELS:
        entry = zoo.get_entry(name)
        assert entry.recipe in zoo.RECIPES and entry.source and entry.description
        assert isinstance(entry.results, dict)


def test_get_entry_returns_a_copy_and_rejects_unknown_names():
    entry = zoo.get_entry("prn_lite0")
    entry.model["image_size"] = 1024
    assert zoo.get_entry("prn_lite0").model["image_size"] == 128
    shared = zoo.get_entry("prn_lite0_mtd_band")
    shared.train["seen_rotation"].append(5.0)  # a nested value the MTD entries share
    assert zoo.get_entry("prn_lite0_mtd_bank").train["seen_rotation"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="prn_lite0_mtd"):  # the message lists known models
        zoo.get_entry("prn_lite7")


def test_entries_describe_what_their_training_builds(tmp_path):
    """Training an entry must produce exactly the entry's model (run() sets these fields)."""
    for name in EXPECTED_MODELS:
        entry = zoo.get_entry(name)
        locations = {"root": str(tmp_path), "category": "bottle"}
        read = DATASET_LOCATIONS[zoo.train_settings(name)["dataset"]]
        config = zoo.train_config(name, **{k: v for k, v in locations.items() if k in read})
        assert config.model_config() == PRNConfig(**entry.model)
        weights = (config.normal_weight, config.seen_weight, config.simulated_weight)
        assert weights == (2.0, 1.0, 1.0)  # the "prn" mix


def test_inconsistent_entry_is_rejected():
    entry = zoo.get_entry("prn_lite0")
    bad = dataclasses.replace(entry, model={**entry.model, "fusion_channels": (8, 8, 8)})
    with pytest.raises(ValueError, match="not what training"):
        zoo._build_registry([bad])
    with pytest.raises(ValueError, match="defined twice"):
        zoo._build_registry([entry, entry])


def test_train_config_overrides_and_errors():
    config = zoo.train_config("prn_lite0", steps=5, image_size=64)
    assert isinstance(config, TrainConfig)
    assert (config.backbone, config.steps, config.image_size) == ("efficientnet_lite0", 5, 64)
    with pytest.raises(ValueError, match="stepz"):
        zoo.train_config("prn_lite0", stepz=5)
    with pytest.raises(ValueError, match="prn_lite0_mtd.*root"):
        zoo.train_config("prn_lite0_mtd")  # dataset paths are the caller's
    with pytest.raises(ValueError, match="'prn_lite0': steps must be an int >= 1, got 2.7"):
        zoo.train_config("prn_lite0", steps=2.7)
    with pytest.raises(ValueError, match="'prn_lite0_mtd': root must be an existing folder"):
        zoo.train_config("prn_lite0_mtd", root="/nonexistent")


def test_create_model_refuses_a_string_for_a_switch():
    with pytest.raises(ValueError, match="use_residuals must be True or False, got 'no'"):
        zoo.create_model("prn_lite0", pretrained=False, use_residuals="no")


def test_train_settings_are_the_whole_run_without_dataset_paths(tmp_path):
    settings = zoo.train_settings("prn_lite0_mtd_band")
    assert settings["root"] is None and settings["memory_bank_size"] == 8192
    config = zoo.train_config("prn_lite0_mtd_band", root=str(tmp_path))
    assert settings == {**config.to_dict(), "root": None}
    with pytest.raises(ValueError, match="unknown zoo model 'nope'"):
        zoo.train_settings("nope")


def test_create_model_applies_overrides():
    model = zoo.create_model("prn_lite0", pretrained=False, image_size=64, top_k=7)
    assert isinstance(model, PRN)
    assert model.config.backbone == "efficientnet_lite0"
    assert (model.config.image_size, model.config.top_k) == (64, 7)
    resnet = zoo.create_model("prn_resnet18_mvtec", pretrained=False, image_size=64)
    assert resnet.config.backbone == "resnet18" and resnet.backbone.channels[0] == 64


def test_create_model_rejects_bad_overrides():
    with pytest.raises(ValueError, match=r"\['colour', 'toppk'\]"):
        zoo.create_model("prn_lite0", pretrained=False, toppk=3, colour="red")
    with pytest.raises(ValueError, match="multiple of 32"):
        zoo.create_model("prn_lite0", pretrained=False, image_size=100)


def test_load_model_round_trip_matches_in_memory_model(tmp_path: Path):
    """A model saved by the recipe's checkpoint writer predicts identically after loading."""
    torch.manual_seed(0)
    model = zoo.create_model("prn_resnet18_mvtec", pretrained=False, image_size=64)
    model.fit_prototypes(_images(5, seed=1), n_images=5)
    with torch.no_grad():  # move the head off its initialisation so the maps are not flat
        for parameter in model.decoder.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.eval()
    optimizer = torch.optim.AdamW(model.decoder.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    config = zoo.train_config("prn_lite0", backbone="resnet18", image_size=64, pretrained=False)
    path = tmp_path / "checkpoint.pt"
    _save_checkpoint(path, model, optimizer, scheduler, config.steps, config, Normal(), 3, 1.0)

    loaded = zoo.load_model(path)
    assert not loaded.training
    assert loaded.config == model.config
    images = _images(4, seed=2)
    expected_scores, expected_maps = model.predict(images)
    scores, maps = loaded.predict(images)
    assert torch.equal(scores, expected_scores) and torch.equal(maps, expected_maps)
    assert maps.std() > 0  # a non-trivial map, so equality means something


def test_load_model_of_recipe_checkpoint(tiny_checkpoint: Path):
    model = zoo.load_model(tiny_checkpoint)
    payload = load_checkpoint(tiny_checkpoint)
    assert model.config.to_dict() == payload["model_config"]
    state = model.state_dict()
    assert all(torch.equal(state[key], value) for key, value in payload["model"].items())
    assert model.input_channels == payload["channels"] == 1  # the demo data are grayscale
    scores, maps = model.predict(_images(2, channels=1))
    assert scores.shape == (2,) and maps.shape == (2, 1, 64, 64)
    assert torch.isfinite(maps).all()


def test_load_model_rejects_files_that_are_not_prn_checkpoints(
    tmp_path: Path, tiny_checkpoint: Path
):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        zoo.load_model(tmp_path / "missing.pt")
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.pt.*not a PRN checkpoint"):
        zoo.load_model(text)
    other = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="not a PRN checkpoint.*version None"):
        zoo.load_model(other)

    payload = load_checkpoint(tiny_checkpoint)
    incomplete = tmp_path / "incomplete.pt"
    del payload["model_config"]["top_k"]
    torch.save(payload, incomplete)
    with pytest.raises(ValueError, match=r"lacks \['top_k'\]"):
        zoo.load_model(incomplete)

    payload = load_checkpoint(tiny_checkpoint)
    payload["model"].pop("decoder.logit.bias")
    broken = tmp_path / "broken.pt"
    torch.save(payload, broken)
    with pytest.raises(ValueError, match="decoder.logit.bias"):
        zoo.load_model(broken)


def test_load_model_refuses_damaged_unfinished_and_non_finite_checkpoints(
    tmp_path: Path, tiny_checkpoint: Path
):
    with pytest.raises(ValueError, match="is a folder; it holds no checkpoint.pt"):
        zoo.load_model(tmp_path)
    with pytest.raises(ValueError, match="is a folder; give '.*checkpoint.pt'"):
        zoo.load_model(tiny_checkpoint.parent)
    damaged = tmp_path / "damaged.pt"
    data = bytearray(tiny_checkpoint.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(b ^ 0xFF for b in data[middle : middle + 4096])
    damaged.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="damaged.pt.*damaged"):
        zoo.load_model(damaged)

    payload = load_checkpoint(tiny_checkpoint)
    payload["step"] = 1
    unfinished = tmp_path / "unfinished.pt"
    torch.save(payload, unfinished)
    with pytest.raises(ValueError, match="unfinished run \\(step 1 of 2\\)"):
        zoo.load_model(unfinished)

    payload = load_checkpoint(tiny_checkpoint)
    payload["model"]["decoder.logit.bias"] = torch.full_like(
        payload["model"]["decoder.logit.bias"], float("nan")
    )
    poisoned = tmp_path / "nan.pt"
    torch.save(payload, poisoned)
    with pytest.raises(ValueError, match="'decoder.logit.bias' holds NaN or inf"):
        zoo.load_model(poisoned)

    payload = load_checkpoint(tiny_checkpoint)
    payload["model_config"]["top_k"] = "many"
    newer = tmp_path / "newer.pt"
    torch.save(payload, newer)
    with pytest.raises(ValueError, match="newer.pt.*does not fit this prn_model"):
        zoo.load_model(newer)


def test_grayscale_model_refuses_colour_images(tiny_checkpoint: Path):
    model = zoo.load_model(tiny_checkpoint)
    assert model.input_channels == load_checkpoint(tiny_checkpoint)["channels"]
    model.input_channels = 1
    with pytest.raises(ValueError, match=r"trained on grayscale.*images\[0\] has 3 channels"):
        model.predict(torch.rand(1, 3, 64, 64))
    scores, _ = model.predict(torch.rand(2, 1, 64, 64))
    assert scores.shape == (2,)


def test_load_model_names_a_device_this_machine_lacks(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
):
    """Not torch's RuntimeError or AssertionError from inside ``.to()``: a ValueError naming
    the device, raised before the checkpoint is read."""
    cases = {
        "gpu9": "invalid device 'gpu9'",
        "meta": "device must be cpu, cuda, cuda:N or mps, got 'meta'",
        3: "device must be a str or torch.device, e.g. 'cpu', got 3",
    }
    for device, message in cases.items():
        with pytest.raises(ValueError, match=message):
            zoo.load_model(tiny_checkpoint, device=device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", torch.device("cuda", 0)):
        with pytest.raises(ValueError, match="device 'cuda.*' requested but CUDA is not available"):
            zoo.load_model(tiny_checkpoint, device=device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"'cuda:3' requested but this machine has 1 CUDA"):
        zoo.load_model(tiny_checkpoint, device="cuda:3")
    assert zoo.load_model(tiny_checkpoint, device=torch.device("cpu")).device.type == "cpu"
