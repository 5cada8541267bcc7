"""Export a trained PRN to TorchScript or ONNX for deployment, and check the export.

The exported graph takes a float batch ``images`` (B, C, S, S) in [0, 1], S =
``config.image_size``, and returns ``scores`` (B,) and ``maps`` (B, 1, S, S): exactly what
``PRN.predict`` returns for images already at the network size (sigmoid anomaly maps and the
mean of the ``top_k`` largest map values). The batch size is free; C is fixed at export time:
use the channels the model was trained on (3 by default, 1 for grayscale data such as MTD).
Grayscale input is repeated to 3 channels inside the graph, as the backbone does. Resizing
images of other sizes is left to the caller (``prn_model.data.resize_image`` resizes as
training and ``PRN.predict`` do).

Both exports trace the eager model once, so Python-side branches (input checks, the "fitted"
flag, shape arithmetic) are fixed for the exported size; ``verify_export`` runs the exported
file and the eager model on the same images, with a batch size other than the traced one.
Tracing drops ``PRN.predict``'s input checks, so each format checks input its own way:
TorchScript wraps the traced graph in a scripted ``CheckedInput`` that raises on a wrong shape,
dtype or value range (0..255, NaN); ONNX fixes C, H and W in the graph's input, which
onnxruntime enforces along with the dtype, but it cannot raise on values: out-of-range values
are clamped to [0, 1], so 0..255 images give wrong maps without an error.

ONNX goes through the TorchScript-based exporter (``dynamo=False``): the dynamo exporter
needs ``onnxscript``, which is not a dependency. That exporter cannot convert
``adaptive_avg_pool2d`` when its output size is computed from a tensor's shape, as PRN's
multi-scale fusion does; ``_exportable_adaptive_pooling`` converts it to the equivalent
``AveragePool`` (kernel = stride = input / output size) from the shapes recorded by the trace.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import math
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from anomgen.preview import check_output_folder
from prn_model.atomic import staged_file
from prn_model.backbones import _RANGE_TOLERANCE, check_unit_range
from prn_model.network import PRN

# The TorchScript-based exporter. Torch 2.5 added the `dynamo` one, which needs the package
# onnxscript and is the default in recent releases (2.13 here); before 2.5 there was no choice.
_TORCHSCRIPT_ONNX_EXPORTER = (
    {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
)

__all__ = [
    "CheckedInput",
    "DeployablePRN",
    "export_onnx",
    "export_torchscript",
    "read_metadata",
    "verify_export",
]

# Largest |exported - eager| accepted by the command line: the maps are probabilities, and
# graph rewrites (fused BatchNorm, other kernels) move them by about 1e-7 in float32.
DEFAULT_ATOL = 1e-4
# Traced with 2 images, verified with 3: a batch size wrongly frozen into the graph shows up.
_TRACE_BATCH, _VERIFY_BATCH = 2, 3
_METADATA_KEY = "prn_export"
_FORMATS = ("onnx", "torchscript")
_ONNX_INPUT, _ONNX_OUTPUTS = "images", ("scores", "maps")


class DeployablePRN(nn.Module):
    """(B, C, S, S) images in [0, 1] -> (scores (B,), sigmoid maps (B, 1, S, S)).

    The same computation as ``PRN.predict`` for images at ``config.image_size``, as a single
    forward that tracing can record.
    """

    def __init__(self, model: PRN) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        maps = self.model.anomaly_map(images.clamp(0.0, 1.0))
        return self.model.image_score(maps), maps


class CheckedInput(nn.Module):
    """Scripted guard in front of a traced ``DeployablePRN``: the checks ``PRN.predict`` makes,
    which a trace cannot record, raised inside the TorchScript file itself."""

    def __init__(self, traced: nn.Module, channels: int, size: int) -> None:
        super().__init__()
        self.traced = traced
        self.channels, self.size, self.tolerance = channels, size, _RANGE_TOLERANCE

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        expected = (self.channels, self.size, self.size)
        shape = [int(side) for side in images.shape]  # a list in eager mode and TorchScript
        if images.dim() != 4 or shape[0] == 0 or shape[1:] != list(expected):
            raise ValueError(
                f"images must be (B >= 1, {self.channels}, {self.size}, {self.size}), "
                f"got {images.shape}"
            )
        if images.dtype != torch.float32:
            raise ValueError("images must be a float32 tensor with values in [0, 1]")
        low, high = torch.aminmax(images)
        if not (bool(low >= -self.tolerance) and bool(high <= 1.0 + self.tolerance)):
            raise ValueError(
                f"images must hold finite values in [0, 1] (not 0..255), got values in "
                f"[{low.item()}, {high.item()}]"
            )
        return self.traced(images)


def _check_model(model: Any) -> PRN:
    if not isinstance(model, PRN):
        raise ValueError(f"model must be a PRN, got {type(model).__name__}")
    if not model.prototypes.is_fitted:
        raise ValueError("model prototypes are not fitted: export a trained model")
    return model


def _example_images(model: PRN, example_size: Sequence[int] | None) -> Tensor:
    """The batch to trace: ``example_size`` (B, C, H, W), default (2, C, S, S) with C the
    channels the model was trained on (3 where unknown)."""
    size, trained = model.config.image_size, model.input_channels
    default = (_TRACE_BATCH, trained or 3, size, size)
    shape = default if example_size is None else tuple(example_size)
    if len(shape) != 4 or shape[0] < 1 or shape[1] not in (1, 3) or shape[2:] != (size, size):
        raise ValueError(
            f"example_size must be (B >= 1, C in {{1, 3}}, {size}, {size}) for this model "
            f"(config.image_size {size}), got {example_size!r}"
        )
    if trained == 1 and shape[1] != 1:
        raise ValueError(
            f"this model was trained on grayscale images: export it with C = 1, got {shape}"
        )
    generator = torch.Generator().manual_seed(0)
    return torch.rand(shape, generator=generator).to(model.device)


def _metadata(model: PRN, images: Tensor, export_format: str) -> dict[str, Any]:
    channels, size = images.shape[1], model.config.image_size
    return {
        "format": export_format,
        "input": f"{_ONNX_INPUT}: float32 (B, {channels}, {size}, {size}) in [0, 1]",
        "outputs": "scores: (B,) mean of the top_k map values; maps: (B, 1, H, W) sigmoid",
        "channels": channels,
        "image_size": size,
        "prn_config": model.config.to_dict(),
    }


@contextlib.contextmanager
def _eval_mode(model: PRN) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _quiet_tracer() -> Iterator[None]:
    """Silence TracerWarnings: they flag Python values that depend only on the fixed input
    size or on the fitted flag (by design here); verify_export catches any real divergence."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def export_torchscript(
    model: PRN, path: str | Path, example_size: Sequence[int] | None = None
) -> Path:
    """Trace ``model`` to a TorchScript file (``torch.jit.load`` reads it back), behind a
    ``CheckedInput`` guard that raises on input of another shape, dtype or value range.

    ``example_size`` is the (B, C, H, W) of the traced batch, default (2, C, S, S) with the
    model's training channels (3 where unknown); only C matters to the result (see the module
    docstring). The export metadata (channels, size, PRN config) is stored as the extra file
    ``prn_export`` inside the archive.
    """
    model = _check_model(model)
    path = _output_path(path)
    images = _example_images(model, example_size)
    with _eval_mode(model), torch.no_grad(), _quiet_tracer():
        traced = torch.jit.trace(DeployablePRN(model), images, check_trace=False)
    checked = torch.jit.script(CheckedInput(traced, images.shape[1], images.shape[2]))
    metadata = json.dumps(_metadata(model, images, "torchscript"))
    with staged_file(path) as staging:
        torch.jit.save(checked, str(staging), _extra_files={_METADATA_KEY: metadata})
    return path


def _symbolic_adaptive_avg_pool2d(g: Any, input: Any, output_size: Any) -> Any:
    """ONNX AveragePool for an adaptive pooling whose sizes are whole multiples.

    The sizes come from the traced node (known for the fixed export size) rather than from
    ``output_size``, which the trace records as shape arithmetic instead of constants.
    """
    node = g.original_node
    in_sizes = node.inputsAt(0).type().varyingSizes()[2:]
    out_sizes = node.output().type().varyingSizes()[2:]
    if None in in_sizes or None in out_sizes or any(i % o for i, o in zip(in_sizes, out_sizes)):
        raise ValueError(
            f"cannot export adaptive_avg_pool2d from {in_sizes} to {out_sizes} to ONNX: "
            "only whole-multiple size reductions map onto AveragePool"
        )
    kernel = [i // o for i, o in zip(in_sizes, out_sizes)]
    return g.op("AveragePool", input, kernel_shape_i=kernel, strides_i=kernel)


@contextlib.contextmanager
def _exportable_adaptive_pooling(opset: int) -> Iterator[None]:
    """Use ``_symbolic_adaptive_avg_pool2d`` while exporting (it replaces any custom one)."""
    name = "aten::adaptive_avg_pool2d"
    torch.onnx.register_custom_op_symbolic(name, _symbolic_adaptive_avg_pool2d, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic(name, opset)


def export_onnx(
    model: PRN, path: str | Path, opset: int = 17, example_size: Sequence[int] | None = None
) -> Path:
    """Export ``model`` to ONNX with a dynamic batch axis (input ``images``; outputs
    ``scores``, ``maps``); needs the ``onnx`` package. ``example_size`` as for
    ``export_torchscript``. The export metadata is stored in the model's metadata_props.
    """
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 14:
        raise ValueError(f"opset must be an int >= 14 (attention needs it), got {opset!r}")
    onnx = _require("onnx", "ONNX export")
    model = _check_model(model)
    path = _output_path(path)
    images = _example_images(model, example_size)
    batch_axis = {0: "batch"}
    with staged_file(path) as staging:
        with (
            _eval_mode(model),
            torch.no_grad(),
            _quiet_tracer(),
            _exportable_adaptive_pooling(opset),
        ):
            torch.onnx.export(
                DeployablePRN(model),
                (images,),
                str(staging),
                **_TORCHSCRIPT_ONNX_EXPORTER,
                opset_version=opset,
                input_names=[_ONNX_INPUT],
                output_names=list(_ONNX_OUTPUTS),
                dynamic_axes={name: batch_axis for name in (_ONNX_INPUT, *_ONNX_OUTPUTS)},
            )
        graph = onnx.load(str(staging))
        onnx.helper.set_model_props(
            graph, {_METADATA_KEY: json.dumps(_metadata(model, images, "onnx"))}
        )
        onnx.save(graph, str(staging))
    return path


def _require(module: str, purpose: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(
            f"{purpose} needs the {module!r} package (pip install onnx onnxruntime)"
        ) from None


def _output_path(path: str | Path) -> Path:
    """``path`` as a Path if an export can be written there; a file in place of its folder is
    named as such, not as a missing folder."""
    path = Path(path)
    check_output_folder(path.parent)
    if path.is_dir():
        raise ValueError(f"output {str(path)!r} is a folder; give a file name")
    return path


class _Rejected(Exception):
    """The export differs from the eager model by more than the accepted tolerance."""


def _format_of(path: Path, export_format: str | None) -> str:
    """``export_format``, or where it is None the format a file name suggests: ONNX for a
    ``.onnx`` suffix, TorchScript for any other."""
    if export_format is None:
        return "onnx" if path.suffix.lower() == ".onnx" else "torchscript"
    if export_format not in _FORMATS:
        raise ValueError(f"export_format must be one of {_FORMATS}, got {export_format!r}")
    return export_format


def read_metadata(path: str | Path, export_format: str | None = None) -> dict[str, Any]:
    """The metadata stored by ``export_torchscript`` / ``export_onnx`` in ``path``.

    ``export_format`` ("onnx" or "torchscript") says how to read the file; by default it
    follows the name: ONNX for a ``.onnx`` file, TorchScript otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model {str(path)!r} does not exist")
    if _format_of(path, export_format) == "onnx":
        onnx = _require("onnx", "reading an ONNX export")
        try:
            graph = onnx.load(str(path), load_external_data=False)
        except Exception as error:  # protobuf's DecodeError and friends
            raise ValueError(f"{str(path)!r} is not an ONNX file: {error}") from None
        text = {prop.key: prop.value for prop in graph.metadata_props}.get(_METADATA_KEY)
    else:
        files = {_METADATA_KEY: ""}
        try:
            torch.jit.load(str(path), map_location="cpu", _extra_files=files)
        except RuntimeError as error:
            raise ValueError(f"{str(path)!r} is not a TorchScript file: {error}") from None
        text = files[_METADATA_KEY] or None
    if text is None:
        raise ValueError(f"{str(path)!r} was not written by prn_model.export (no metadata)")
    return json.loads(text)


def _run_exported(path: Path, images: Tensor, export_format: str) -> tuple[np.ndarray, np.ndarray]:
    if export_format == "onnx":
        onnxruntime = _require("onnxruntime", "running an ONNX export")
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        scores, maps = session.run(list(_ONNX_OUTPUTS), {_ONNX_INPUT: images.cpu().numpy()})
        return scores, maps
    module = torch.jit.load(str(path), map_location=images.device)
    # The same graph without the JIT's profiling passes, which only fuse ops for later calls
    # and make each of the first calls of a graph this size take seconds.
    with torch.no_grad(), torch.jit.optimized_execution(False):
        scores, maps = module(images)
    return scores.cpu().numpy(), maps.cpu().numpy()


def verify_export(
    model: PRN,
    path: str | Path,
    images: Tensor | None = None,
    export_format: str | None = None,
) -> float:
    """Largest |exported - eager| over scores and maps, on ``images`` or 3 random images.

    ``path`` is an ONNX file (run with onnxruntime on the CPU) or a TorchScript file, as
    ``export_format`` says (by default as its name says, see ``read_metadata``).
    ``images`` is a (B, C, S, S) float batch in [0, 1]; by default 3 seeded random images with
    the exported channel count (another batch size than the traced one, on purpose).
    """
    model = _check_model(model)
    path = Path(path)
    export_format = _format_of(path, export_format)
    metadata = read_metadata(path, export_format)
    size, channels = model.config.image_size, metadata["channels"]
    if metadata["image_size"] != size:
        raise ValueError(
            f"{str(path)!r} was exported at {metadata['image_size']} px, the model runs at {size}"
        )
    if images is None:
        generator = torch.Generator().manual_seed(1)
        images = torch.rand((_VERIFY_BATCH, channels, size, size), generator=generator)
    if not isinstance(images, Tensor) or tuple(images.shape[1:]) != (channels, size, size):
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be (B, {channels}, {size}, {size}), got {got}")
    if not images.is_floating_point():  # 0..255 images would clamp to white and still agree
        raise ValueError(f"images must be a float tensor in [0, 1], got dtype {images.dtype}")
    check_unit_range(images, "images")
    images = images.to(device=model.device, dtype=torch.float32)
    with _eval_mode(model), torch.no_grad():
        scores, maps = DeployablePRN(model)(images)
    exported_scores, exported_maps = _run_exported(path, images, export_format)
    return float(
        max(
            np.abs(exported_scores - scores.cpu().numpy()).max(),
            np.abs(exported_maps - maps.cpu().numpy()).max(),
        )
    )


def _tolerance(text: str) -> float:
    """--atol, checked before the export runs: a negative or NaN tolerance rejects every
    export, and only after all its work."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prn_model.export",
        description="Export a PRN checkpoint to ONNX or TorchScript and check it against the "
        "eager model. The exported graph maps images (B, C, S, S) in [0, 1] to scores (B,) and "
        "anomaly maps (B, 1, S, S), S = the checkpoint's image size.",
    )
    parser.add_argument("checkpoint", type=Path, help="checkpoint.pt written by the recipe")
    parser.add_argument("--format", required=True, choices=_FORMATS)
    parser.add_argument("--out", required=True, type=Path, help="output file")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        default=None,
        help="input channels (default: those the checkpoint was trained on)",
    )
    parser.add_argument(
        "--atol",
        type=_tolerance,
        default=DEFAULT_ATOL,
        help=f"largest accepted |exported - eager|, >= 0 (default {DEFAULT_ATOL:g})",
    )
    args = parser.parse_args(argv)
    from prn_model.train import load_checkpoint
    from prn_model.zoo import load_model

    try:
        out = _output_path(args.out)  # checked before the slow loading
        model = load_model(args.checkpoint)
        channels = args.channels or int(load_checkpoint(args.checkpoint).get("channels", 3))
        example = (_TRACE_BATCH, channels, model.config.image_size, model.config.image_size)
        # Exported and verified beside OUT, moved into place only if it passes.
        with staged_file(out) as staging:
            if args.format == "onnx":
                export_onnx(model, staging, opset=args.opset, example_size=example)
            else:
                export_torchscript(model, staging, example_size=example)
            # The format as given: the file's name need not say it.
            difference = verify_export(model, staging, export_format=args.format)
            if not difference <= args.atol:  # NaN fails too
                raise _Rejected(difference)
    except _Rejected as rejected:
        print(
            f"prn_model.export: error: the export differs from the eager model by "
            f"{rejected.args[0]:.3g} (> --atol {args.atol:g}); {args.out} was not written",
            file=sys.stderr,
        )
        return 1
    except (ValueError, OSError) as error:
        print(f"prn_model.export: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.format}); max |exported - eager| = {difference:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
