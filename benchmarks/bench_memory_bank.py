"""Cost of the memory-bank fusion (``--memory-bank-size``) on this machine.

Prints, for efficientnet_lite0 at 256x256 on the CPU (random encoder weights time like real
ones, random images stand in for normal ones):
  - the time of ``PRN.fit_memory_bank`` for a bank of each ``--sizes`` from ``--normals``
    images (encoder features, candidate sampling, greedy coreset selection) plus the
    calibration on a tenth as many,
  - inference images/s at batch 8 without and with the bank (``PRN.anomaly_map``).

    python benchmarks/bench_memory_bank.py [--sizes 4096 8192 16384] [--normals 640]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from prn_model.network import PRN, PRNConfig


def _median_seconds(fn, images: torch.Tensor, repeats: int) -> float:
    """Median seconds of ``fn(images)`` after one warm-up call."""
    fn(images)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(images)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--normals", type=int, default=640)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if min(args.sizes) < 1:
        parser.error(f"every --sizes must be >= 1, got {args.sizes}")
    for name in ("normals", "threads", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    size = 256
    generator = torch.Generator().manual_seed(0)
    normals = torch.rand((args.normals, 3, size, size), generator=generator)
    calibration = torch.rand((max(1, args.normals // 10), 3, size, size), generator=generator)
    images = torch.rand((8, 3, size, size), generator=generator)
    plain = PRN(PRNConfig(image_size=size), pretrained=False)
    n_prototypes = min(64, args.normals)  # prototypes only need fitting, not timing
    plain.fit_prototypes(normals[:n_prototypes], n_images=n_prototypes).eval()
    with torch.no_grad():
        baseline = 8 / _median_seconds(plain.anomaly_map, images, args.repeats)
    print(f"efficientnet_lite0, {size} px, {args.threads} threads, {args.normals} normal images")
    print(f"without a bank: {baseline:.1f} images/s")
    print(f"{'bank size':>10} {'fit (s)':>8} {'images/s':>9}")
    for bank_size in args.sizes:
        model = PRN(dataclasses.replace(plain.config, memory_bank_size=bank_size), pretrained=False)
        model.load_state_dict(plain.state_dict(), strict=False)
        model.eval()
        started = time.perf_counter()
        model.fit_memory_bank(normals.split(16), calibration.split(16), seed=0)
        fit_seconds = time.perf_counter() - started
        with torch.no_grad():
            throughput = 8 / _median_seconds(model.anomaly_map, images, args.repeats)
        filled = model.memory_bank.bank.shape[0]  # fewer when the images give fewer candidates
        note = "" if filled == bank_size else f"  (filled {filled}: every candidate vector)"
        print(f"{bank_size:>10} {fit_seconds:>8.1f} {throughput:>9.1f}{note}")


if __name__ == "__main__":
    main()
