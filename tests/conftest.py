"""Shared fixtures: the real data beside the checkout, skipped cleanly when absent."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

# Where the scripts look for the real data by default: ../shared/data beside the checkout.
DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# PRN_TEST_SHARED_DATA points the realdata tests elsewhere, e.g. at a missing folder to check
# that they skip cleanly: PRN_TEST_SHARED_DATA=/nonexistent pytest -m realdata
SHARED_DATA = Path(os.environ.get("PRN_TEST_SHARED_DATA", DEFAULT_SHARED_DATA))


# OpenCV 5 interpolates float32 warps exactly; OpenCV 4 rounds each sampling position to
# 1/32 px (INTER_BITS = 5), which moves a value by at most 1/32 of the range between
# neighbours. anomgen's float32 CPU rotations and Perlin canvases go through OpenCV.
OPENCV_EXACT_WARPS = int(cv2.__version__.split(".")[0]) >= 5
OPENCV_WARP_ATOL = 1e-5 if OPENCV_EXACT_WARPS else 1 / 32


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A realdata test skips when the data is absent, whether or not it asks for the
    ``shared_data`` fixture; a test that asks for it must carry the marker, so that
    ``-m "not realdata"`` leaves out every test that reads the real data."""
    marked = item.get_closest_marker("realdata") is not None
    if "shared_data" in getattr(item, "fixturenames", ()) and not marked:
        pytest.fail(f"{item.nodeid} uses shared_data but is not marked realdata", False)
    if marked and not SHARED_DATA.is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA}")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def texture_dir(tmp_path: Path) -> Path:
    """A small folder of strongly patterned RGB textures."""
    from PIL import Image

    folder = tmp_path / "textures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        checker = (np.indices((64, 64)).sum(0) // (4 + 2 * i) % 2) * 255
        rgb = np.stack([checker, 255 - checker, rng.integers(0, 255, (64, 64))], -1)
        Image.fromarray(rgb.astype(np.uint8)).save(folder / f"tex_{i}.png")
    return folder


@pytest.fixture
def normal_dir(tmp_path: Path) -> Path:
    """A folder of smooth grayscale 'normal' images."""
    from PIL import Image

    folder = tmp_path / "normal"
    folder.mkdir()
    for i in range(4):
        ramp = np.linspace(60 + 10 * i, 160, 48 * 40).reshape(48, 40)
        Image.fromarray(ramp.astype(np.uint8)).save(folder / f"img_{i}.png")
    return folder


def random_image(channels: int = 3, height: int = 64, width: int = 64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((channels, height, width), generator=generator) * 0.6 + 0.2


def tiny_train_config(**overrides):
    """A training run small enough for tests: demo data, random resnet18, 64 px, CPU."""
    from prn_model.train import TrainConfig

    values = dict(
        dataset="demo",
        backbone="resnet18",
        pretrained=False,
        image_size=64,
        steps=6,
        batch_size=4,
        n_anomalies=3,
        checkpoint_every=2,
        heatmaps=2,
        device="cpu",
    )
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step resnet18 checkpoint written by the training recipe, shared by the session.

    ``stop_at_step`` ends the run right after the checkpoint, skipping the evaluation.
    """
    from prn_model.train import run

    out = tmp_path_factory.getbasetemp() / "prn_tiny_run"
    if not (out / "checkpoint.pt").is_file():
        config = tiny_train_config(steps=2, heatmaps=1, stop_at_step=2)
        run(config, out)
    return out / "checkpoint.pt"


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Benchmark mains set torch's thread count for their process; the tests call them in
    this one, and later tests (and the environment a report records) must not inherit it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def expect_usage_error(main, argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """The one error line of a command-line ``main``, which must exit 2 without a traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in err
    return errors[0]


def without_hub_notice(err: str) -> str:
    """stderr without torch hub's own 'Downloading: ...' line, which torch 2.3 writes there
    (recent releases write it to stdout) before a download fails."""
    return "".join(
        line for line in err.splitlines(keepends=True) if not line.startswith("Downloading: ")
    )


def mixed_channel_folder(root: Path) -> dict[str, str]:
    """A folder dataset whose normal images mix grey and colour files: its config options."""
    from tests.test_data import write_image, write_mask

    for i in range(12):
        mode = "RGB" if i % 3 == 0 else "L"
        write_image(root / f"good/{i:02d}.png", (64, 64), 90 + 5 * i, mode)
    for i in range(4):
        write_image(root / f"bad/dent/{i}.png", (64, 64), 200, "L")
        write_mask(root / f"masks/dent/{i}.png", (64, 64))
    folders = (("normal_dir", "good"), ("anomaly_dir", "bad"), ("mask_dir", "masks"))
    return {"dataset": "folder", **{key: str(root / name) for key, name in folders}}
