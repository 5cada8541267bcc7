"""PRN cost on this machine: training step, inference, encoder vs head, scaling.

Prints, for each backbone at 256x256 (CPU, and CUDA when available):
  - training step time (batch 8, forward + backward + AdamW step of the head),
  - inference images/s (batch 8) and the share of time in the frozen encoder vs the
    PRN head (prototypes, residuals, fusion, attention, decoder),
  - peak resident memory of a process doing just that.
With --scaling (efficientnet_lite0): inference time at 128, 256 and 512 px, and
prototype fitting time (encoding and k-means, not building the model or making its
input) and peak memory for 100, 500 and 1000 normal images.

Each measurement runs in its own process so peak memory is its own. Random weights
(pretrained=False) time the same as real ones.

    python benchmarks/bench_prn.py [--backbones resnet18 ...] [--scaling] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from prn_model.backbones import list_backbones
from prn_model.loss import PRNLoss
from prn_model.network import PRN, PRNConfig
from prn_model.peak_memory import peak_rss_mib


def _timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _fitted_model(
    backbone: str, size: int, n_normal: int, device: torch.device
) -> tuple[PRN, float]:
    """A model with prototypes fitted on random images, and the seconds the fit alone took."""
    model = PRN(PRNConfig(backbone=backbone, image_size=size), pretrained=False).to(device)
    normals = torch.rand((n_normal, 3, size, size), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    model.fit_prototypes(normals.split(16), n_images=n_normal, seed=0)
    return model.to(device), time.perf_counter() - start


def measure_model(backbone: str, size: int, device_name: str, repeats: int) -> dict:
    device = torch.device(device_name)
    model, _ = _fitted_model(backbone, size, 40, device)
    images = torch.rand((8, 3, size, size), device=device)
    masks = (torch.rand((8, 1, size, size), device=device) > 0.95).float()
    model.eval()
    with torch.no_grad():
        encoder = _timed(lambda: model.backbone(images), repeats, device)
        total = _timed(lambda: model(images), repeats, device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    criterion = PRNLoss()

    def step() -> None:
        loss, _ = criterion(model(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    train = _timed(step, repeats, device)
    result = {
        "backbone": backbone,
        "size": size,
        "device": device_name,
        "train_step_s": train,
        "inference_images_per_s": 8 / total,
        "encoder_share": encoder / total,
        "head_over_encoder": (total - encoder) / encoder,
        "peak_rss_mib": peak_rss_mib(),
    }
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def measure_inference(size: int, repeats: int) -> dict:
    model = _fitted_model("efficientnet_lite0", size, 20, torch.device("cpu"))[0].eval()
    image = torch.rand((1, 3, size, size))
    with torch.no_grad():
        seconds = _timed(lambda: model(image), repeats, torch.device("cpu"))
    return {"size": size, "inference_ms": seconds * 1000}


def measure_prototypes(n_normal: int, size: int = 256) -> dict:
    _, fit_seconds = _fitted_model("efficientnet_lite0", size, n_normal, torch.device("cpu"))
    return {
        "n_normal": n_normal,
        "fit_s": fit_seconds,
        "peak_rss_mib": peak_rss_mib(),
    }


def _child(args: list[str], threads: int, repeats: int) -> dict:
    """Run one measurement in its own process; a failure ends the benchmark with its stderr."""
    command = [sys.executable, __file__, "--threads", str(threads), "--repeats", str(repeats)]
    out = subprocess.run([*command, "--child", *args], capture_output=True, text=True)
    if out.returncode != 0:
        print("\n".join(out.stderr.splitlines()[-20:]), file=sys.stderr)
        raise SystemExit(
            f"bench_prn.py: the measurement {' '.join(args)!r} failed (exit {out.returncode}); "
            "its stderr ends above"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="PRN training and inference cost")
    parser.add_argument(
        "--backbones", nargs="+", choices=list_backbones(), default=list_backbones()
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scaling", action="store_true", help="also sizes and prototype counts")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.size < 32 or args.size % 32:
        parser.error(
            f"--size must be a positive multiple of 32 (PRN's deepest stride), got {args.size}"
        )
    for name in ("repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    if args.child:
        kind, *rest = args.child
        if kind == "model":
            result = measure_model(rest[0], int(rest[1]), rest[2], args.repeats)
        elif kind == "inference":
            result = measure_inference(int(rest[0]), args.repeats)
        else:
            result = measure_prototypes(int(rest[0]))
        print(json.dumps(result))
        return

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(
        f"torch {torch.__version__}, {args.threads} CPU threads, batch 8, {args.size}x{args.size}"
    )
    header = (
        "backbone            device  train step  infer im/s  encoder share  head/encoder  peak MiB"
    )
    print(header)
    for device in devices:
        for backbone in args.backbones:
            r = _child(["model", backbone, str(args.size), device], args.threads, args.repeats)
            step, rate = r["train_step_s"], r["inference_images_per_s"]
            share, ratio = r["encoder_share"], r["head_over_encoder"]
            print(
                f"{backbone:<19} {device:<6} {step:>9.2f}s {rate:>11.1f} {share:>13.0%}"
                f" {ratio:>13.2f} {r['peak_rss_mib']:>9.0f}"
            )
    if not args.scaling:
        return
    print("\nefficientnet_lite0 inference, batch 1:")
    for size in (128, 256, 512):
        r = _child(["inference", str(size)], args.threads, args.repeats)
        print(f"  {size:>4} px: {r['inference_ms']:.1f} ms")
    print("\nprototype fitting at 256 px (k-means, K = 10 % of the images):")
    for n in (100, 500, 1000):
        r = _child(["prototypes", str(n)], args.threads, args.repeats)
        print(f"  {n:>5} images: {r['fit_s']:.1f} s, peak {r['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
