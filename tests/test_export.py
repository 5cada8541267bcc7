"""TorchScript / ONNX export: the exported graphs reproduce the eager model."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from prn_model.export import (
    CheckedInput,
    DeployablePRN,
    export_onnx,
    export_torchscript,
    main,
    read_metadata,
    verify_export,
)
from prn_model.network import PRN, PRNConfig
from prn_model.zoo import load_model
from tests.conftest import expect_usage_error

onnxruntime = pytest.importorskip("onnxruntime")

# torch 2.13 deprecates TorchScript and the TorchScript-based ONNX exporter (the dynamo one
# needs onnxscript, not a dependency); prn_model.export documents this, so keep the log clean.
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
]

# float32 graphs run by other kernels (onnxruntime, fused BatchNorm) differ by ~1e-7 here.
ATOL = 1e-5


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path) -> PRN:
    return load_model(tiny_checkpoint)


@pytest.fixture(scope="module")
def exports(model: PRN, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("exports")
    return {
        "torchscript": export_torchscript(model, folder / "prn.pt"),
        "onnx": export_onnx(model, folder / "prn.onnx"),
    }


def _images(n: int, channels: int = 3, size: int = 64, seed: int = 5) -> torch.Tensor:
    return torch.rand((n, channels, size, size), generator=torch.Generator().manual_seed(seed))


def test_deployable_module_matches_predict(model: PRN):
    images = _images(3, channels=1)
    scores, maps = DeployablePRN(model)(images)
    expected_scores, expected_maps = model.predict(images)
    assert torch.equal(scores, expected_scores) and torch.equal(maps, expected_maps)
    assert scores.shape == (3,) and maps.shape == (3, 1, 64, 64)


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_export_matches_eager_model(model: PRN, exports: dict[str, Path], kind: str):
    path = exports[kind]
    assert verify_export(model, path) < ATOL  # 3 random images; the trace used 2
    assert verify_export(model, path, _images(5, channels=1, seed=9)) < ATOL
    metadata = read_metadata(path)
    assert metadata["format"] == kind
    assert (metadata["channels"], metadata["image_size"]) == (1, 64)  # as trained (demo: grey)
    assert metadata["prn_config"] == model.config.to_dict()


def test_exported_files_run_on_their_own(model: PRN, exports: dict[str, Path]):
    images = _images(4, channels=1, seed=3)
    expected_scores, expected_maps = model.predict(images)
    module = torch.jit.load(str(exports["torchscript"]))
    with torch.no_grad():
        scores, maps = module(images)
    torch.testing.assert_close(scores, expected_scores, atol=ATOL, rtol=0)
    torch.testing.assert_close(maps, expected_maps, atol=ATOL, rtol=0)

    onnx = pytest.importorskip("onnx")
    onnx.checker.check_model(str(exports["onnx"]), full_check=True)
    session = onnxruntime.InferenceSession(str(exports["onnx"]), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    assert graph_input.name == "images" and graph_input.shape[1:] == [1, 64, 64]
    assert not isinstance(graph_input.shape[0], int)  # dynamic batch
    onnx_scores, onnx_maps = session.run(["scores", "maps"], {"images": images.numpy()})
    torch.testing.assert_close(torch.from_numpy(onnx_scores), expected_scores, atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.from_numpy(onnx_maps), expected_maps, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (_images(2, channels=3), r"must be \(B >= 1, 1, 64, 64\), got \[2, 3, 64, 64\]"),
        (_images(2, channels=1, size=32), r"got \[2, 1, 32, 32\]"),
        (_images(1, channels=1)[0], r"got \[1, 64, 64\]"),
        (_images(0, channels=1), r"B >= 1"),
        (_images(2, channels=1).double(), "float32"),
        (_images(2, channels=1) * 255, r"not 0\.\.255\), got values in \[0\.\d+, 25\d\.\d+\]"),
        (torch.full((2, 1, 64, 64), float("nan")), r"finite values in \[0, 1\]"),
    ],
)
def test_torchscript_export_rejects_bad_input(
    exports: dict[str, Path], images: torch.Tensor, message: str
):
    """A trace records no Python checks: the scripted guard raises instead of scoring garbage."""
    module = torch.jit.load(str(exports["torchscript"]))
    with pytest.raises(torch.jit.Error, match=message), torch.no_grad():
        module(images)


def test_onnx_export_rejects_a_wrong_shape(exports: dict[str, Path]):
    """The ONNX graph fixes C, H and W (only the batch is dynamic); onnxruntime enforces them."""
    session = onnxruntime.InferenceSession(str(exports["onnx"]), providers=["CPUExecutionProvider"])
    for images in (_images(2, channels=3), _images(2, channels=1, size=32)):
        with pytest.raises(Exception, match="(?i)invalid|dimension"):
            session.run(["scores", "maps"], {"images": images.numpy()})


def test_verify_export_detects_a_different_model(model: PRN, exports: dict[str, Path]):
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.decoder.logit.bias.add_(1.0)  # shifts every logit by 1
    for path in exports.values():
        assert verify_export(changed, path) > 0.005


def test_grayscale_efficientnet_lite0_onnx(tmp_path: Path):
    """EfficientNet's TF-"SAME" padding (computed per input) and 1-channel input export."""
    torch.manual_seed(0)
    lite = PRN(PRNConfig(backbone="efficientnet_lite0", image_size=64), pretrained=False)
    lite.fit_prototypes(_images(4, channels=1, seed=1), n_images=4)
    lite.eval()
    path = export_onnx(lite, tmp_path / "lite.onnx", example_size=(2, 1, 64, 64))
    assert read_metadata(path)["channels"] == 1
    assert verify_export(lite, path) < ATOL


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_patch_matching_model_exports(tmp_path: Path, kind: str):
    torch.manual_seed(0)
    config = PRNConfig(
        backbone="resnet18", image_size=64, prototype_matching="patch", patch_prototypes=6
    )
    patch = PRN(config, pretrained=False)
    patch.fit_prototypes(_images(4, seed=2), n_images=4)
    patch.eval()
    export = export_onnx if kind == "onnx" else export_torchscript
    assert verify_export(patch, export(patch, tmp_path / f"patch.{kind}")) < ATOL


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_model_with_a_memory_bank_exports_the_fused_maps(tmp_path: Path, kind: str):
    torch.manual_seed(0)
    banked = PRN(
        PRNConfig(backbone="resnet18", image_size=64, memory_bank_size=30), pretrained=False
    )
    banked.fit_prototypes(_images(4, seed=3), n_images=4)
    banked.fit_memory_bank(_images(4, seed=4), _images(2, seed=5)).eval()
    export = export_onnx if kind == "onnx" else export_torchscript
    assert verify_export(banked, export(banked, tmp_path / f"banked.{kind}")) < ATOL


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_intensity_normalised_model_exports(tmp_path: Path, kind: str):
    torch.manual_seed(0)
    config = PRNConfig(backbone="resnet18", image_size=64, intensity_normalisation="image")
    normalised = PRN(config, pretrained=False)
    normalised.fit_prototypes(_images(4, seed=6), n_images=4)
    normalised.eval()
    export = export_onnx if kind == "onnx" else export_torchscript
    assert verify_export(normalised, export(normalised, tmp_path / f"normalised.{kind}")) < ATOL


def test_export_rejects_bad_input(model: PRN, tmp_path: Path):
    unfitted = PRN(PRNConfig(backbone="resnet18", image_size=64), pretrained=False)
    with pytest.raises(ValueError, match="not fitted"):
        export_onnx(unfitted, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match=r"\(B >= 1, C in \{1, 3\}, 64, 64\)"):
        export_torchscript(model, tmp_path / "x.pt", example_size=(2, 3, 128, 128))
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "x.onnx", opset=11)
    with pytest.raises(FileNotFoundError, match="missing"):
        export_onnx(model, tmp_path / "missing" / "x.onnx")
    (tmp_path / "other.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a TorchScript file"):
        verify_export(model, tmp_path / "other.pt")
    (tmp_path / "other.onnx").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not an ONNX file"):
        verify_export(model, tmp_path / "other.onnx")
    with pytest.raises(ValueError, match="not an ONNX file"):
        verify_export(model, tmp_path / "other.pt", export_format="onnx")
    with pytest.raises(ValueError, match="export_format must be one of"):
        read_metadata(tmp_path / "other.pt", export_format="tflite")


def test_the_format_given_wins_over_the_file_name(
    model: PRN, exports: dict[str, Path], tmp_path: Path
):
    for kind, path in exports.items():
        renamed = tmp_path / f"{kind}.bin"
        renamed.write_bytes(path.read_bytes())
        assert read_metadata(renamed, export_format=kind)["format"] == kind
        assert verify_export(model, renamed, export_format=kind) < ATOL


def test_command_line(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "prn.pt"
    assert main([str(tiny_checkpoint), "--format", "torchscript", "--out", str(out)]) == 0
    assert "max |exported - eager|" in capsys.readouterr().out
    assert read_metadata(out)["format"] == "torchscript"
    missing = tmp_path / "missing.pt"
    assert main([str(missing), "--format", "onnx", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tiny_checkpoint), "--format", "tflite", "--out", str(out)])


@pytest.mark.parametrize(("kind", "name"), [("onnx", "m.bin"), ("torchscript", "m.onnx")])
def test_command_line_writes_either_format_under_any_name(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, kind: str, name: str
):
    """--format decides, not the suffix of --out (nor that of the staging file beside it)."""
    out = tmp_path / name
    assert main([str(tiny_checkpoint), "--format", kind, "--out", str(out)]) == 0
    assert f"wrote {out} ({kind})" in capsys.readouterr().out
    assert read_metadata(out, export_format=kind)["format"] == kind
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("atol", ["-1", "nan", "inf", "-inf", "tiny"])
def test_command_line_refuses_a_bad_atol_before_exporting(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, atol: str
):
    out = tmp_path / "prn.pt"
    argv = [str(tiny_checkpoint), "--format", "torchscript", "--out", str(out), f"--atol={atol}"]
    error = expect_usage_error(main, argv, capsys)
    assert f"--atol: must be a finite number >= 0, got {atol!r}" in error
    assert list(tmp_path.iterdir()) == []


def test_command_line_keeps_the_old_file_when_the_export_is_rejected(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
):
    out = tmp_path / "prn.pt"
    out.write_bytes(b"the previous, accepted export")
    # An export that differs by more than --atol: nothing may replace the old file.
    monkeypatch.setattr("prn_model.export.verify_export", lambda *args, **kwargs: 1.0)
    code = main([str(tiny_checkpoint), "--format", "torchscript", "--out", str(out)])
    assert code == 1 and "was not written" in capsys.readouterr().err
    assert out.read_bytes() == b"the previous, accepted export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prn.pt"]  # no staging file left
    folder = tmp_path / "folder.pt"
    folder.mkdir()
    assert main([str(tiny_checkpoint), "--format", "torchscript", "--out", str(folder)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_command_line_names_a_file_in_place_of_the_out_folder_before_loading(
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
):
    """Not "output folder ... does not exist": the folder is a file, said before any loading."""
    file = tmp_path / "notes.txt"
    file.write_text("keep me")

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr("prn_model.zoo.load_model", no_loading)
    out = file / "prn.pt"
    assert main([str(tiny_checkpoint), "--format", "torchscript", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert (
        error == f"prn_model.export: error: output folder {str(file)!r} is a file, not a folder\n"
    )
    assert file.read_text() == "keep me"


def test_verify_export_refuses_images_that_are_not_unit_floats(
    model: PRN, exports: dict[str, Path]
):
    """0..255 images clamp to white in both models and would 'verify' without comparing."""
    path = exports["onnx"]
    shape = (1, read_metadata(path)["channels"], model.config.image_size, model.config.image_size)
    with pytest.raises(ValueError, match="float tensor in \\[0, 1\\], got dtype torch.uint8"):
        verify_export(model, path, torch.full(shape, 200, dtype=torch.uint8))
    with pytest.raises(ValueError, match="images must hold finite values in \\[0, 1\\]"):
        verify_export(model, path, torch.full(shape, 200.0))


class _Pair(nn.Module):
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return images, images


def test_checked_input_works_in_eager_mode_as_scripted():
    check = CheckedInput(_Pair(), 3, 4)
    images = torch.rand(1, 3, 4, 4)
    for module in (check, torch.jit.script(check)):
        assert torch.equal(module(images)[0], images)
        with pytest.raises(Exception, match=r"images must be \(B >= 1, 3, 4, 4\)"):
            module(torch.rand(1, 3, 4, 5))
