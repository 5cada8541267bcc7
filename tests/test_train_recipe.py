"""prn-train's command line (recipes/train_prn.py in a checkout): help, switches, paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prn_model.train import TrainConfig
from prn_model.train_cli import parse_args


def test_train_recipe_help_shows_every_default_once_and_refuses_resume_with_overwrite(
    capsys: pytest.CaptureFixture,
):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_of: dict[str, str] = {}
    option = ""
    for line in capsys.readouterr().out.split("options:", 1)[1].splitlines():
        if line.startswith("  -"):
            option = line.split()[0].rstrip(",")
        if option:
            help_of[option] = help_of.get(option, "") + " " + " ".join(line.split())
    for option, default in [
        ("--steps", "300"),
        ("--image-size", "128"),
        ("--seed", "0"),
        ("--mix", "[2.0, 1.0, 1.0]"),
        ("--original-weight", "0.0"),
        ("--checkpoint-every", "100"),
    ]:
        assert help_of[option].endswith(f"(default: {default})"), help_of[option]
    twice = [option for option, text in help_of.items() if text.count("default") > 1]
    assert not twice  # no hand-written default beside argparse's
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--resume", "--overwrite"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_train_recipe_stores_data_folders_as_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / "data" / "mtd").mkdir(parents=True)
    (tmp_path / "dtd").mkdir()
    monkeypatch.chdir(tmp_path)
    config, *_ = parse_args(["--dataset", "mtd", "--root", "data/mtd", "--textures", "dtd"])
    assert config.root == str(tmp_path / "data" / "mtd")
    assert config.textures == str(tmp_path / "dtd")


def test_prn_train_is_an_installed_command_and_the_recipe_its_checkout_twin(capsys):
    from importlib.metadata import entry_points

    from prn_model import train_cli

    (script,) = entry_points(group="console_scripts", name="prn-train")
    assert script.load() is train_cli.main
    assert train_cli.main(["--steps", "0"]) == 2
    assert capsys.readouterr().err.startswith("prn-train: error: steps must be an int >= 1")


def test_config_option_starts_from_a_runs_config_json_and_options_override_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
):
    (tmp_path / "dtd").mkdir()
    saved = TrainConfig(
        steps=7, lr=0.01, weight_decay=0.5, heatmaps=2, textures=str(tmp_path / "dtd")
    ).to_dict()
    saved.update(pretrained=False, seen_weight=0.0, stop_at_step=3)
    del saved["original_weight"]  # as written before --original-weight existed
    path = tmp_path / "config.json"
    path.write_text(json.dumps(saved))
    config, *_ = parse_args(["--config", str(path)])
    # Every value (those without an option too) but the interrupted run's stop_at_step.
    assert config == TrainConfig(**{**saved, "original_weight": 0.0, "stop_at_step": None})
    config, *_ = parse_args(["--config", str(path), "--steps", "9", "--mix", "1", "1", "1"])
    assert (config.steps, config.lr, config.seen_weight) == (9, 0.01, 1.0)
    path.write_text(json.dumps({**saved, "colour": "red"}))
    with pytest.raises(
        ValueError, match=r"config\.json' has unknown TrainConfig keys \['colour'\]"
    ):
        parse_args(["--config", str(path)])
    path.write_text(json.dumps({**saved, "top_k": "5"}))  # argparse would have parsed it
    with pytest.raises(ValueError, match=r"config\.json': top_k must be of type int, got '5'"):
        parse_args(["--config", str(path)])
    path.write_text("{")
    with pytest.raises(ValueError, match="is not valid JSON"):
        parse_args(["--config", str(path)])
    path.write_bytes(b"\xff\xfe{}")  # not text: named, not a bare codec error
    with pytest.raises(ValueError, match=r"config\.json' is not UTF-8 text .* at byte 0"):
        parse_args(["--config", str(path)])
    with pytest.raises(SystemExit):
        parse_args(["--config", str(path), "--model", "prn_lite0_mtd_band"])
    assert "not allowed with argument" in capsys.readouterr().err
