"""The encoder fine-tuning ablation trains what it says, and its control is the recipe's run."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from benchmarks import ablate_finetune_encoder as ablation
from prn_model.network import PRN
from prn_model.train import run
from tests.conftest import expect_usage_error, tiny_train_config

METRICS = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap")


def _layers(model: PRN) -> dict[str, dict[str, torch.Tensor]]:
    body = model.backbone.body
    return {
        name: copy.deepcopy(getattr(body, name).state_dict())
        for name in ("layer1", "layer2", "layer3", "layer4")
    }


def _record_initial_layers(monkeypatch) -> list[dict[str, dict[str, torch.Tensor]]]:
    """The encoder stages of the run's model as built, before any training."""
    built = []

    def recording_prn(*args, **kwargs):
        model = PRN(*args, **kwargs)
        built.append(_layers(model))
        return model

    monkeypatch.setattr(ablation, "PRN", recording_prn)
    return built


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[key], b[key]) for key in a)


def test_the_control_is_the_training_recipes_run(tmp_path):
    config = tiny_train_config(steps=4, heatmaps=0)
    expected = run(config, tmp_path / "recipe")
    _, metrics = ablation.finetune_run(config, tmp_path / "control", from_stride=0)
    for name in METRICS:
        assert math.isclose(metrics[name], expected[name], abs_tol=1e-12), name
    assert metrics["ablation"]["trained_encoder_parameters"] == 0


def test_stride_32_trains_the_last_stage_only(tmp_path, monkeypatch):
    built = _record_initial_layers(monkeypatch)
    config = tiny_train_config(steps=3, heatmaps=0)
    model, metrics = ablation.finetune_run(
        config, tmp_path / "run", from_stride=32, encoder_lr_scale=1.0
    )
    untouched = built[0]
    trained = _layers(model)
    for name in ("layer1", "layer2", "layer3"):
        assert _same(trained[name], untouched[name]), name
    assert not _same(trained["layer4"], untouched["layer4"])
    assert metrics["ablation"]["trained_encoder_parameters"] == sum(
        p.numel() for p in model.backbone.body.layer4.parameters()
    )
    assert metrics["ablation"]["refit_every"] is None
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_stride_16_refits_the_prototypes_and_ends_on_a_frozen_encoder(tmp_path, monkeypatch):
    refits = []
    refit = ablation.refit_prototypes

    def recording_refit(model, normals, seed):
        refits.append(_layers(model))
        refit(model, normals, seed)

    monkeypatch.setattr(ablation, "refit_prototypes", recording_refit)
    built = _record_initial_layers(monkeypatch)
    config = tiny_train_config(steps=6, heatmaps=0)
    model, metrics = ablation.finetune_run(
        config,
        tmp_path / "run",
        from_stride=16,
        encoder_lr_scale=1.0,
        refit_every=2,
        head_only_steps=2,
    )
    # Refits at step 2 (periodic) and step 4 (the head-only tail's start), not at step 0.
    assert len(refits) == 2
    trained = _layers(model)
    assert all(_same(trained[name], refits[-1][name]) for name in trained)  # frozen tail
    assert not _same(refits[0]["layer3"], refits[1]["layer3"])  # trained before it
    for name in ("layer1", "layer2"):
        assert _same(trained[name], built[0][name]), name
    assert metrics["ablation"]["head_only_steps"] == 2


def test_backbones_without_known_stages_are_refused():
    model = PRN(tiny_train_config().model_config(), pretrained=False)
    model.backbone.body = torch.nn.Identity()
    with pytest.raises(ValueError, match="resnet18"):
        ablation.trainable_blocks(model, 32)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--root", "/no/such/mtd"], "/no/such/mtd"),
        (["--textures", "/no/such/dtd"], "/no/such/dtd"),
        (["--head-only-steps", "1200"], "--head-only-steps"),
        (["--encoder-lr-scale", "0"], "--encoder-lr-scale"),
        (["--refit-every", "0"], "--refit-every"),
    ],
)
def test_bad_options_are_usage_errors(argv, named, tmp_path, capsys):
    if "--root" not in argv:
        argv = ["--root", str(tmp_path), *argv]
    assert named in expect_usage_error(ablation.main, argv, capsys)
