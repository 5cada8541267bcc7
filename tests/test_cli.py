"""`anomgen preview` and `anomgen list`, run as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from anomgen import OneOf, PerlinTexturePaste
from anomgen.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "anomgen", *args], capture_output=True, text=True, timeout=120
    )


def test_preview_writes_grid(normal_dir, texture_dir, tmp_path):
    out = tmp_path / "grid.png"
    code = main(
        [
            "preview",
            "--images",
            str(normal_dir),
            "--textures",
            str(texture_dir),
            "-n",
            "6",
            "--size",
            "64",
            "--seed",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    grid = np.asarray(Image.open(out))
    # 4 columns at most, each cell is three 64 px tiles; 2 rows of 6 samples.
    assert grid.shape[1] >= 4 * 3 * 64 and grid.shape[0] >= 2 * 64
    assert (grid[..., 0] == 255).any() and (grid[..., 1] == 40).any()  # red outlines drawn


def test_preview_from_config(normal_dir, tmp_path):
    config = tmp_path / "mix.yaml"
    config.write_text(yaml.safe_dump(OneOf([PerlinTexturePaste()]).to_dict()))
    out = tmp_path / "grid.png"
    assert (
        main(
            [
                "preview",
                "--images",
                str(normal_dir),
                "--config",
                str(config),
                "-n",
                "2",
                "--size",
                "32",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.is_file()


def test_bad_input_exits_with_one_line_and_no_file(tmp_path, normal_dir):
    out = tmp_path / "grid.png"
    empty = tmp_path / "empty"
    empty.mkdir()
    incomplete = tmp_path / "incomplete.yaml"
    incomplete.write_text("type: SeenAnomalyPaste\n")
    images = ["preview", "--images", str(normal_dir)]
    cases = {
        "no images": ["preview", "--images", str(empty), "--out", str(out)],
        "does not exist": ["preview", "--images", str(tmp_path / "missing"), "--out", str(out)],
        "unknown preset": [*images, "--preset", "nope", "--out", str(out)],
        "needs real anomalies": [*images, "--preset", "prn", "--out", str(out)],
        "does not use textures": [
            *images,
            "--preset",
            "cutpaste",
            "--textures",
            str(empty),
            "--out",
            str(out),
        ],
        "names its own data": [
            *images,
            "--config",
            str(incomplete),
            "--textures",
            str(empty),
            "--out",
            str(out),
        ],
        "needs parameter": [*images, "--config", str(incomplete), "--out", str(out)],
        # The output is checked before any image is read or rendered.
        "output folder": ["preview", "--images", str(empty), "--out", str(empty / "no/x.png")],
    }
    for message, args in cases.items():
        result = _run(*args)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("anomgen: error:"), result.stderr
        assert message in lines[0], (message, lines[0])
        assert not out.exists()
    (normal_dir / "broken.png").write_bytes(b"not an image")
    result = _run(
        "preview", "--images", str(normal_dir), "-n", "8", "--size", "32", "--out", str(out)
    )
    assert result.returncode == 2 and "broken.png" in result.stderr
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_list_and_help():
    listing = _run("list")
    assert listing.returncode == 0
    for name in ("PerlinTexturePaste", "CutPaste", "SeenAnomalyPaste", "draem", "prn"):
        assert name in listing.stdout
    help_text = _run("preview", "--help").stdout
    for option in (
        "--images",
        "--preset",
        "--config",
        "--textures",
        "--anomalies",
        "--masks",
        "-n",
        "--size",
        "--seed",
        "--out",
    ):
        assert option in help_text


def test_version_is_the_distributions_one_version():
    from importlib.metadata import version

    import anomgen
    import prn_model

    assert _run("--version").stdout.strip() == f"anomgen {anomgen.__version__}"
    assert prn_model.__version__ == anomgen.__version__ == version("anomgen-prn")


@pytest.mark.realdata
def test_preview_on_real_data(shared_data: Path, tmp_path):
    """The prn preset on MTD: real Blowhole defects pasted onto normal tiles, DTD textures."""
    import shutil

    mtd = shared_data / "mtd"
    anomalies = tmp_path / "anomalies"
    anomalies.mkdir()
    for image in sorted((mtd / "MT_Blowhole" / "Imgs").glob("*.jpg"))[:3]:
        shutil.copy(image, anomalies / image.name)
        shutil.copy(image.with_suffix(".png"), anomalies / image.with_suffix(".png").name)
    out = tmp_path / "mtd.png"
    code = main(
        [
            "preview",
            "--images",
            str(mtd / "MT_Free" / "Imgs"),
            "--preset",
            "prn",
            "--anomalies",
            str(anomalies),
            "--textures",
            str(shared_data / "dtd"),
            "-n",
            "4",
            "--size",
            "64",
            "--out",
            str(out),
        ]
    )
    assert code == 0 and out.is_file()


def test_anomgen_stands_alone():
    """anomgen never imports prn_model (it is a library of its own)."""
    code = (
        "import sys, anomgen, anomgen.cli, anomgen.dataset;"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'prn_model'];"
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_configs_of_the_wrong_shape_give_one_error_line(tmp_path, normal_dir, capsys):
    """YAML that parses with the wrong types, or does not parse, is a usage error."""
    configs = {
        "type: OneOf\ntransforms: 3\n": "transforms must be a list",
        "type: OneOf\ntransforms: [{type: Normal}]\nweights: 3\n": "weights must be",
        "type: SomeOf\ntransforms: [{type: Normal}]\nn: 1\n": "n must be",
        "type: PerlinTexturePaste\nthreshold: null\n": "threshold must be a number",
        "type: CutPaste\ncolor_jitter: null\n": "color_jitter must be a number",
        "type: [CutPaste]\n": "unknown transform",
        "{": "is not valid YAML/JSON: expected the node content",
    }
    config, out = tmp_path / "c.yaml", tmp_path / "grid.png"
    for text, message in configs.items():
        config.write_text(text)
        args = ["preview", "--images", str(normal_dir), "--config", str(config)]
        assert main([*args, "--out", str(out)]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("anomgen: error:"), lines
        assert message in lines[0], (text, lines[0])


def test_config_that_is_not_text_or_not_a_file_is_named(tmp_path, normal_dir, capsys):
    """A binary file, or a folder, given as --config gets one line naming it."""
    config, out = tmp_path / "c.yaml", tmp_path / "grid.png"
    config.write_bytes(b"\xff\xfe\x00 binary")
    cases = {
        config: f"{str(config)!r} is not UTF-8 text (YAML/JSON): invalid start byte at byte 0",
        tmp_path: f"{str(tmp_path)!r} is not a file",
    }
    for path, message in cases.items():
        args = ["preview", "--images", str(normal_dir), "--config", str(path)]
        assert main([*args, "--out", str(out)]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines == [f"anomgen: error: config file {message}"], lines


def test_seed_count_and_size_are_checked_before_any_data_loads(tmp_path, normal_dir, capsys):
    """A missing texture folder would be reported first if the pools loaded first."""
    base = ["preview", "--images", str(normal_dir), "--textures", str(tmp_path / "none")]
    cases = {
        ("--seed", "-1"): r"--seed must be an int in [0, 2**64), got -1",
        ("--seed", str(2**64)): "--seed must be an int in [0, 2**64), got 18446744073709551616",
        ("-n", "0"): "n must be at least 1, got 0",
        ("--size", "4"): "size must be at least 8 px, got 4",
        # A canvas this large raised a MemoryError traceback while being allocated.
        ("--size", "100000"): "a grid of 16 samples at size 100000 would be 1200080x400088 px, "
        "more than Pillow opens (178,956,970 px); lower -n or --size",
    }
    for extra, message in cases.items():
        assert main([*base, *extra, "--out", str(tmp_path / "grid.png")]) == 2
        assert capsys.readouterr().err.strip() == f"anomgen: error: {message}"


def test_a_file_given_as_the_image_folder_is_named(tmp_path, normal_dir, capsys):
    image = next(normal_dir.iterdir())
    assert main(["preview", "--images", str(image), "--out", str(tmp_path / "grid.png")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_preview_names_a_file_in_place_of_the_output_folder(normal_dir, tmp_path, capsys):
    """Not "output folder ... does not exist": the folder, or one above it, is a file."""
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    cases = {
        file / "grid.png": f"output folder {str(file)!r} is a file, not a folder",
        file / "sub" / "grid.png": f"output folder {str(file / 'sub')!r} cannot exist: "
        f"{str(file)!r} is a file",
    }
    for out, message in cases.items():
        assert main(["preview", "--images", str(normal_dir), "--out", str(out)]) == 2
        assert capsys.readouterr().err == f"anomgen: error: {message}\n"
    assert file.read_text() == "keep me"


def test_render_preview_names_bad_arguments(normal_dir):
    """The library call behind ``anomgen preview`` (in anomgen.preview's __all__): no
    ZeroDivisionError for an empty list, no TypeError from range() for a float ``n``."""
    from anomgen import Normal, list_images
    from anomgen.preview import render_preview

    images = list_images(normal_dir)
    cases = {
        "image_paths is empty": ([], {}),
        "image_paths must be a list of image files": (str(images[0]), {}),
        r"image_paths\[1\] must be a str or Path, got 3": ([images[0], 3], {}),
        "n must be an integer, got 2.5": (images, {"n": 2.5}),
        "size must be an integer, got 32.0": (images, {"size": 32.0}),
        "columns must be at least 1, got 0": (images, {"columns": 0}),
        "n must be an integer, got True": (images, {"n": True}),
    }
    for message, (paths, kwargs) in cases.items():
        with pytest.raises(ValueError, match=message):
            render_preview(paths, Normal(), **{"size": 32, **kwargs})
    with pytest.raises(ValueError, match="transform must be an anomgen transform"):
        render_preview(images, lambda image: image)
    grid = render_preview([str(p) for p in images], Normal(), n=np.int64(2), size=32)
    assert grid.size == render_preview(images, Normal(), n=2, size=32).size
