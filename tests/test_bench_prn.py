"""benchmarks/bench_prn.py: settings reach the measuring process, failures show its stderr."""

from __future__ import annotations

import subprocess

import pytest

from benchmarks import bench_prn
from tests.conftest import expect_usage_error


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--repeats", "0"], "--repeats"),
        (["--threads", "0"], "--threads"),
        (["--size", "100"], "--size"),
        (["--size", "0"], "--size"),
        (["--backbones", "resnet19"], "resnet19"),
    ],
)
def test_bad_settings_exit_2_naming_the_value(argv, named, capsys):
    assert named in expect_usage_error(bench_prn.main, argv, capsys)


def test_every_setting_is_passed_to_the_measuring_process(monkeypatch, capsys):
    commands = []
    row = (
        '{"train_step_s": 0.1, "inference_images_per_s": 9.0, "encoder_share": 0.5,'
        ' "head_over_encoder": 1.0, "peak_rss_mib": 100}'
    )

    def fake_run(command, **_):
        commands.append(command)
        return subprocess.CompletedProcess(command, 0, stdout=row + "\n", stderr="")

    monkeypatch.setattr(bench_prn.subprocess, "run", fake_run)
    monkeypatch.setattr(bench_prn.torch.cuda, "is_available", lambda: False)
    bench_prn.main(["--backbones", "resnet18", "--size", "64", "--repeats", "3", "--threads", "1"])
    (command,) = commands
    options = command[command.index("--threads") : command.index("--child")]
    assert options == ["--threads", "1", "--repeats", "3"]
    assert command[command.index("--child") + 1 :] == ["model", "resnet18", "64", "cpu"]
    assert capsys.readouterr().out.splitlines()[-1].startswith("resnet18")


def test_a_failed_measurement_ends_with_its_stderr(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_prn._child(["model", "resnet18", "64", "no_such_device"], threads=1, repeats=1)
    message = str(exit_info.value.code)
    assert "model resnet18 64 no_such_device" in message and "failed (exit 1)" in message
    assert "no_such_device" in capsys.readouterr().err  # the child's own error
