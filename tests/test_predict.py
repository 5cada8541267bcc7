"""prn-predict: scores CSV, heatmaps, bad images and bad arguments."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prn_model.data import load_image
from prn_model.predict import PARTIAL_INFO, _fingerprint, main
from prn_model.zoo import load_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """RGB and gray images of several sizes, two masks, a corrupt file and a text file."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(folder / "b.png")
    Image.fromarray(rng.integers(0, 256, (80, 60, 3), dtype=np.uint8)).save(folder / "c.jpg")
    Image.fromarray(np.zeros((80, 60), np.uint8)).save(folder / "c.png")  # c.jpg's mask
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(folder / "b_mask.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_writes_scores_and_heatmaps_and_reports_corrupt_image(
    tiny_checkpoint: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    out = tmp_path / "out"
    argv = [str(tiny_checkpoint), str(image_dir), "--out", str(out), "--batch-size", "2"]
    status = main([*argv, "--threshold", "0.0105"])

    assert status == 1  # one image could not be read
    captured = capsys.readouterr()
    assert "broken.png" in captured.err
    rows = _read_csv(out / "scores.csv")
    assert list(rows[0]) == ["file", "score", "anomalous", "error"]
    assert [row["file"] for row in rows] == ["a.png", "b.png", "broken.png", "c.jpg"]
    broken = rows[2]
    assert broken["score"] == "" and broken["anomalous"] == "" and "broken.png" in broken["error"]

    model = load_model(tiny_checkpoint)
    # The demo model is grayscale: colour files are scored as their luma.
    names = ("a.png", "b.png", "c.jpg")
    images = [load_image(image_dir / name, grayscale=True) for name in names]
    expected, _ = model.predict(images)
    scored = [row for row in rows if not row["error"]]
    scores = torch.tensor([float(row["score"]) for row in scored])
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=0)
    assert [row["anomalous"] for row in scored] == [str(int(s >= 0.0105)) for s in expected]

    heatmaps = sorted(p.name for p in (out / "heatmaps").iterdir())
    assert heatmaps == ["a.png.png", "b.png.png", "c.jpg.png"]
    for name, (height, width) in {"a.png": (50, 70), "b.png": (64, 64), "c.jpg": (80, 60)}.items():
        with Image.open(out / "heatmaps" / f"{name}.png") as overlay:
            assert overlay.size == (2 * width, height)  # image beside its overlay, own size
            assert overlay.mode == "RGB"


def test_no_heatmaps_and_no_threshold(tiny_checkpoint: Path, image_dir: Path, tmp_path: Path):
    (image_dir / "broken.png").unlink()
    out = tmp_path / "out"
    assert main([str(tiny_checkpoint), str(image_dir), "--out", str(out), "--no-heatmaps"]) == 0
    rows = _read_csv(out / "scores.csv")
    assert list(rows[0]) == ["file", "score", "error"]
    assert all(0.0 <= float(row["score"]) <= 1.0 and row["error"] == "" for row in rows)
    assert not (out / "heatmaps").exists()


def test_empty_folder_and_bad_arguments_fail_with_one_line(
    tiny_checkpoint: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    out = str(tmp_path / "out")
    cases = {
        "no images": [str(tiny_checkpoint), str(empty), "--out", out],
        "does not exist": [str(tmp_path / "nope.pt"), str(image_dir), "--out", out],
        "not a PRN checkpoint": [str(image_dir / "a.png"), str(image_dir), "--out", out],
        "threshold": [str(tiny_checkpoint), str(image_dir), "--out", out, "--threshold", "5"],
        "batch_size": [str(tiny_checkpoint), str(image_dir), "--out", out, "--batch-size", "0"],
    }
    for message, argv in cases.items():
        assert main(argv) == 2, message
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out" / "scores.csv").exists()


def test_paths_of_the_wrong_kind_are_named_as_such(
    tiny_checkpoint: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    """A run folder for the checkpoint, an image for the folder: say so, with the path to give."""
    empty = tmp_path / "empty"
    empty.mkdir()
    run, checkpoint = str(tiny_checkpoint.parent), str(tiny_checkpoint)
    image, missing = image_dir / "a.png", tmp_path / "missing"
    cases = {
        f"checkpoint {run!r} is a folder; give {checkpoint!r}": [run, str(image_dir)],
        f"image folder {str(image)!r} is a file, not a folder; give its folder "
        f"{str(image_dir)!r}": [checkpoint, str(image)],
        f"image folder {str(missing)!r} does not exist": [checkpoint, str(missing)],
        f"no images (.png, .jpg, .jpeg, .bmp, .tif, .tiff) in folder {str(empty)!r}": [
            checkpoint,
            str(empty),
        ],
    }
    for message, argv in cases.items():
        assert main([*argv, "--out", str(tmp_path / "out")]) == 2, message
        assert capsys.readouterr().err == f"prn-predict: error: {message}\n"
    assert not (tmp_path / "out").exists()


def test_module_entry_point(tmp_path: Path, image_dir: Path):
    result = subprocess.run(
        [sys.executable, "-m", "prn_model.predict", str(tmp_path / "missing.pt"), str(image_dir)]
        + ["--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"prn-predict: error: checkpoint {str(tmp_path / 'missing.pt')!r} does not exist"
    ]


def test_colour_files_are_read_as_a_grayscale_model_was_trained(
    tiny_checkpoint: Path, tmp_path: Path
):
    """A colour file given to a grayscale model is scored as its luma, not refused or mixed."""
    from prn_model.predict import predict_folder

    folder = tmp_path / "colour"
    folder.mkdir()
    rng = np.random.default_rng(3)
    colour = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(colour).save(folder / "colour.png")
    model = load_model(tiny_checkpoint)
    model.input_channels = 1
    rows = predict_folder(model, folder, tmp_path / "out", heatmaps=False)
    grey = load_image(folder / "colour.png", grayscale=True)
    expected, _ = model.predict([grey])
    assert rows[0]["error"] == "" and float(rows[0]["score"]) == pytest.approx(
        float(expected[0]), abs=1e-6
    )


def test_files_left_out_are_named_and_earlier_results_are_not_mixed_in(
    tiny_checkpoint: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    out = tmp_path / "out"
    argv = [str(tiny_checkpoint), str(image_dir), "--out", str(out)]
    assert main(argv) == 1  # broken.png cannot be read
    err = capsys.readouterr().err
    assert "not scored: c.png: taken as the mask of c.jpg" in err
    assert "not scored: b_mask.png: a mask" in err
    assert "not scored: notes.txt: not an image type" in err
    assert main(argv) == 2 and "holds earlier results" in capsys.readouterr().err
    (image_dir / "a.png").unlink()
    assert main([*argv, "--overwrite"]) == 1
    assert sorted(p.name for p in (out / "heatmaps").iterdir()) == ["b.png.png", "c.jpg.png"]


def test_an_interrupted_run_keeps_its_rows_and_resumes(
    tiny_checkpoint: Path,
    image_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
):
    from prn_model.network import PRN

    reference = tmp_path / "reference"
    argv = [str(tiny_checkpoint), str(image_dir), "--batch-size", "1", "--threshold", "0.01"]
    assert main([*argv, "--out", str(reference)]) == 1  # broken.png
    expected = _read_csv(reference / "scores.csv")

    scored: list[int] = []
    original = PRN.predict

    def interrupted_after_one(self: PRN, images, batch_size=8):
        if scored:
            raise KeyboardInterrupt
        scored.append(len(images))
        return original(self, images, batch_size)

    out = tmp_path / "out"
    monkeypatch.setattr(PRN, "predict", interrupted_after_one)
    assert main([*argv, "--out", str(out)]) == 130
    assert "rerun with --resume" in capsys.readouterr().err
    assert not (out / "scores.csv").exists()
    assert [row["file"] for row in _read_csv(out / "scores.partial.csv")] == ["a.png"]
    assert main([*argv, "--out", str(out)]) == 2
    assert "holds an interrupted run" in capsys.readouterr().err

    calls: list[int] = []

    def counted(self: PRN, images, batch_size=8):
        calls.append(len(images))
        return original(self, images, batch_size)

    monkeypatch.setattr(PRN, "predict", counted)
    assert main([*argv, "--out", str(out), "--threshold", "0.5", "--resume"]) == 2
    assert "started with another threshold" in capsys.readouterr().err
    assert main([*argv, "--out", str(out), "--resume"]) == 1
    assert "resuming: 1 images already scored" in capsys.readouterr().err
    assert calls == [1, 1]  # b.png and c.jpg; a.png was kept, broken.png fails to load
    rows = _read_csv(out / "scores.csv")
    assert rows == expected
    assert sorted(p.name for p in out.iterdir()) == ["heatmaps", "scores.csv"]
    assert len(list((out / "heatmaps").iterdir())) == 3

    assert main([*argv, "--out", str(out), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_resume_rescores_a_cut_off_row_and_starts_afresh_without_a_partial_run(
    tiny_checkpoint: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    (image_dir / "broken.png").unlink()
    out = tmp_path / "out"
    argv = [str(tiny_checkpoint), str(image_dir), "--out", str(out), "--no-heatmaps"]
    assert main([*argv, "--resume"]) == 0
    assert "nothing to resume" in capsys.readouterr().err
    expected = _read_csv(out / "scores.csv")

    # A run killed while writing its second row: the cut-off row is scored again.
    lines = (out / "scores.csv").read_text().splitlines()
    (out / "scores.csv").unlink()
    (out / "scores.partial.csv").write_text("\n".join(lines[:2]) + "\n" + lines[2][:6])
    settings = {
        "model": _fingerprint(load_model(tiny_checkpoint)),
        "images_dir": str(image_dir.resolve()),
        "threshold": None,
        "heatmaps": False,
    }
    (out / PARTIAL_INFO).write_text(json.dumps(settings))
    assert main([*argv, "--resume"]) == 0
    assert "resuming: 1 images already scored" in capsys.readouterr().err
    assert _read_csv(out / "scores.csv") == expected

    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--resume", "--overwrite"])
    assert exit_info.value.code == 2


def test_a_folder_or_broken_link_named_like_an_image_is_named_as_not_scored(
    tiny_checkpoint: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    (image_dir / "broken.png").unlink()
    (image_dir / "folder.png").mkdir()
    (image_dir / "link.jpg").symlink_to(tmp_path / "gone.jpg")
    (image_dir / "plain_subfolder").mkdir()
    out = tmp_path / "out"
    assert main([str(tiny_checkpoint), str(image_dir), "--out", str(out), "--no-heatmaps"]) == 0
    err = capsys.readouterr().err
    assert "not scored: folder.png: a folder, not an image file" in err
    assert "not scored: link.jpg: a broken link, not an image file" in err
    assert "plain_subfolder" not in err
    assert [row["file"] for row in _read_csv(out / "scores.csv")] == ["a.png", "b.png", "c.jpg"]


def test_a_device_this_machine_lacks_is_one_line_before_loading(
    tiny_checkpoint: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    out = tmp_path / "out"
    argv = [str(tiny_checkpoint), str(image_dir), "--out", str(out), "--device", "gpu9"]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("prn-predict: error: invalid --device 'gpu9'")
    assert not out.exists()


def test_an_out_that_is_a_file_is_one_line_before_the_model_loads(
    tiny_checkpoint: Path,
    image_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
):
    """Not ``[Errno 17] File exists`` once the model has loaded: the path, and what it is."""
    from prn_model.predict import predict_folder

    model = load_model(tiny_checkpoint)
    file = tmp_path / "results.csv"
    file.write_text("keep me")
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "gone")

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr("prn_model.predict.load_model", no_loading)
    cases = {
        file: f"output folder {str(file)!r} is a file, not a folder",
        file / "sub": f"output folder {str(file / 'sub')!r} cannot exist: {str(file)!r} is a file",
        link: f"output folder {str(link)!r} is a broken link, not a folder",
    }
    for out, message in cases.items():
        assert main([str(tiny_checkpoint), str(image_dir), "--out", str(out)]) == 2
        assert capsys.readouterr().err == f"prn-predict: error: {message}\n"
        with pytest.raises(ValueError, match=re.escape(message)):
            predict_folder(model, image_dir, out)
    assert file.read_text() == "keep me"
