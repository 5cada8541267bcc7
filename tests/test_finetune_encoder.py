"""Encoder fine-tuning in the training recipe (TrainConfig.encoder_from_stride)."""

from __future__ import annotations

import copy

import pytest
import torch

from prn_model import train as train_module
from prn_model.export import export_onnx, export_torchscript, verify_export
from prn_model.network import PRN
from prn_model.train import TrainConfig, load_checkpoint, run
from prn_model.train_cli import parse_args
from prn_model.zoo import load_model, train_config
from tests.conftest import tiny_train_config

STAGES = ("layer1", "layer2", "layer3", "layer4")


def _stages(model: PRN) -> dict[str, dict[str, torch.Tensor]]:
    body = model.backbone.body
    return {name: copy.deepcopy(getattr(body, name).state_dict()) for name in STAGES}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[key], b[key]) for key in a)


def _record_built_models(monkeypatch) -> list[PRN]:
    """The run's model as built, recorded before any training (a deep copy)."""
    built = []

    def recording_prn(*args, **kwargs):
        model = PRN(*args, **kwargs)
        built.append(copy.deepcopy(model))
        return model

    monkeypatch.setattr(train_module, "PRN", recording_prn)
    return built


def _record_fits(monkeypatch) -> list[dict[str, dict[str, torch.Tensor]]]:
    """The encoder's stages at every prototype fit, in order."""
    fits = []
    fit_prototypes = PRN.fit_prototypes

    def recording_fit(model, *args, **kwargs):
        fits.append(_stages(model))
        return fit_prototypes(model, *args, **kwargs)

    monkeypatch.setattr(PRN, "fit_prototypes", recording_fit)
    return fits


def _finetune_config(**overrides) -> TrainConfig:
    values = dict(
        encoder_from_stride=16,
        encoder_lr_scale=1.0,
        prototype_refit_every=2,
        head_only_steps=2,
        heatmaps=0,
    )
    return tiny_train_config(**{**values, **overrides})


def test_frozen_encoder_is_the_default_and_trains_nothing_of_it(tmp_path, monkeypatch):
    built = _record_built_models(monkeypatch)
    run(tiny_train_config(steps=2, heatmaps=0), tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert len(state["optimizer"]["param_groups"]) == 1
    initial = built[0].backbone.state_dict()
    for key, value in initial.items():
        assert torch.equal(state["model"][f"backbone.{key}"], value), key


def test_stride_32_trains_the_last_stage_only_without_refits(tmp_path, monkeypatch):
    built = _record_built_models(monkeypatch)
    fits = _record_fits(monkeypatch)
    config = tiny_train_config(steps=3, heatmaps=0, encoder_from_stride=32, encoder_lr_scale=1.0)
    run(config, tmp_path / "run")
    trained = _stages(load_model(tmp_path / "run" / "checkpoint.pt"))
    initial = _stages(built[0])
    for name in ("layer1", "layer2", "layer3"):
        assert _same(trained[name], initial[name]), name
    assert not _same(trained["layer4"], initial["layer4"])
    assert len(fits) == 1  # layer4 feeds no prototyped map: the first fit holds


def test_stride_16_refits_the_prototypes_and_ends_on_a_frozen_encoder(tmp_path, monkeypatch):
    built = _record_built_models(monkeypatch)
    fits = _record_fits(monkeypatch)
    run(_finetune_config(steps=6), tmp_path / "run")
    # The first fit, a refit before step 2, and one before step 4 as the head-only tail starts.
    assert len(fits) == 3
    trained = _stages(load_model(tmp_path / "run" / "checkpoint.pt"))
    initial = _stages(built[0])
    assert all(_same(trained[name], fits[-1][name]) for name in STAGES)  # frozen tail
    assert not _same(fits[1]["layer3"], fits[2]["layer3"])  # trained before it
    assert not _same(trained["layer4"], initial["layer4"])
    for name in ("layer1", "layer2"):
        assert _same(trained[name], initial[name]), name


def test_the_encoder_learns_at_its_own_rate(tmp_path):
    run(_finetune_config(steps=3, encoder_lr_scale=0.25, lr=2e-3), tmp_path / "run")
    head, encoder = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["optimizer"]["param_groups"]
    assert head["initial_lr"] == 2e-3
    assert encoder["initial_lr"] == 5e-4


# Resumed where a refit is due, where the head-only tail starts, and inside the tail.
@pytest.mark.parametrize("stop_at_step", [2, 4, 5])
def test_an_interrupted_fine_tuning_run_resumes_to_the_same_model(tmp_path, stop_at_step):
    straight = run(_finetune_config(), tmp_path / "straight")
    run(_finetune_config(stop_at_step=stop_at_step, checkpoint_every=1), tmp_path / "resumed")
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["step"] == stop_at_step
    resumed = run(_finetune_config(), tmp_path / "resumed", resume=True)
    assert straight["rank_fingerprints"] == resumed["rank_fingerprints"]
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["model"]
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_a_fine_tuned_checkpoint_loads_and_exports_its_own_encoder(tmp_path, monkeypatch, kind):
    built = _record_built_models(monkeypatch)
    run(_finetune_config(steps=4, encoder_from_stride=8), tmp_path / "run")
    model = load_model(tmp_path / "run" / "checkpoint.pt")
    assert not model.encoder_trainable
    assert not _same(_stages(model)["layer2"], _stages(built[0])["layer2"])
    export = export_torchscript if kind == "torchscript" else export_onnx
    path = export(model, tmp_path / f"model.{kind}")
    assert verify_export(model, path) < 1e-4


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"encoder_from_stride": 4}, "encoder_from_stride must be one of"),
        ({"encoder_from_stride": "16"}, "encoder_from_stride must be one of"),
        ({"encoder_lr_scale": 0}, "encoder_lr_scale must be a positive number"),
        ({"prototype_refit_every": 0}, "prototype_refit_every must be an int >= 1"),
        (
            {"encoder_from_stride": 16, "head_only_steps": 6},
            r"head_only_steps must be an int in \[1, 5\], got 6",
        ),
        (
            {"encoder_from_stride": 8, "head_only_steps": 0},
            r"head_only_steps must be an int in \[1, 5\], got 0",
        ),
        ({"head_only_steps": -1}, "head_only_steps must be an int >= 0"),
    ],
)
def test_bad_fine_tuning_options_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_train_config(**overrides)


def test_a_run_that_refits_nothing_needs_no_head_only_tail():
    config = tiny_train_config(encoder_from_stride=32, head_only_steps=200)
    assert not config.refits_prototypes
    assert tiny_train_config(encoder_from_stride=16, head_only_steps=5).refits_prototypes


def test_the_command_line_sets_the_fine_tuning_options(tmp_path):
    config, *_ = parse_args(
        ["--encoder-from-stride", "16", "--encoder-lr-scale", "0.3"]
        + ["--prototype-refit-every", "100", "--head-only-steps", "50"]
    )
    assert (config.encoder_from_stride, config.encoder_lr_scale) == (16, 0.3)
    assert (config.prototype_refit_every, config.head_only_steps) == (100, 50)


def test_the_fine_tuned_zoo_entry_is_the_mtd_default_with_a_fine_tuned_encoder(tmp_path):
    finetuned = train_config("prn_lite0_mtd_finetuned", root=str(tmp_path)).to_dict()
    default = train_config("prn_lite0_mtd_normalised", root=str(tmp_path)).to_dict()
    assert {k: v for k, v in finetuned.items() if default[k] != v} == {"encoder_from_stride": 16}


def test_the_fine_tuned_unseen_tile_entry_differs_from_its_base_in_the_encoder_only(tmp_path):
    finetuned = train_config("prn_lite0_mtd_unseen_finetuned", root=str(tmp_path)).to_dict()
    unseen = train_config("prn_lite0_mtd_unseen", root=str(tmp_path)).to_dict()
    assert {k: v for k, v in finetuned.items() if unseen[k] != v} == {"encoder_from_stride": 16}
    assert (finetuned["split_by"], finetuned["prototype_share"]) == ("group", 0.5)


def test_a_backbone_without_named_blocks_cannot_be_fine_tuned():
    model = PRN(tiny_train_config().model_config(), pretrained=False)
    model.backbone.body = torch.nn.Identity()
    with pytest.raises(ValueError, match="resnet18"):
        model.unfreeze_encoder(16)
    with pytest.raises(ValueError, match="from_stride must be one of"):
        model.unfreeze_encoder(4)
