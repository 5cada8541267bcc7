"""Encoder fine-tuning ablation: the MTD default with the encoder's last blocks trained too.

PRN keeps its ImageNet encoder frozen. docs/results.md found that no fusion of PRN's and the
memory bank's maps closes the gap to the MTD targets, so the maps themselves, hence the
features, must get better; this measures whether training the encoder's deepest blocks
does that. ``--from-stride 32`` trains the blocks after the stride-16 tap (they feed only the
decoder, so prototypes and memory bank see unchanged features); ``--from-stride 16`` also
trains the stride-16 stage, whose prototypes are then refitted every ``--refit-every`` steps
and once more before the last ``--head-only-steps``, which train the head alone on the final
prototypes. ``--from-stride 0`` trains nothing of the encoder: the control, the same run as
``prn_model.train`` with the zoo entry's settings. BatchNorm statistics stay frozen; encoder
weights learn at ``--encoder-lr-scale`` times the head's rate, on the same cosine schedule.

After training, the memory bank is filled from the (fine-tuned) encoder and the test set
scored exactly as ``prn_model.train`` does; the metrics are printed and written to
OUT/metrics.json.

    python benchmarks/ablate_finetune_encoder.py --from-stride 32 --out runs/finetune32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from prn_model.atomic import write_text_atomic
from prn_model.backbones import FEATURE_STRIDES, ResNet
from prn_model.loss import PRNLoss
from prn_model.network import PRN, normalise_intensity
from prn_model.peak_memory import peak_rss_mib
from prn_model.train import (
    TrainConfig,
    _collate,
    _cosine,
    _Dist,
    _fit_memory_bank,
    _StepBatches,
    build_transform,
    config_split,
    evaluate_split,
    nan_to_none,
    prototype_rows,
    read_records,
    training_dataset,
)
from prn_model.zoo import train_config

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MODEL = "prn_lite0_mtd_normalised"
METRICS = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap")
FROM_STRIDES = (0, 16, 32)


def trainable_blocks(model: PRN, from_stride: int) -> list[torch.nn.Module]:
    """The encoder's modules after its tap below ``from_stride`` (none for 0).

    EfficientNet-Lite: the MBConv blocks after that tap; ResNet: the stages from that stride on.
    """
    if from_stride == 0:
        return []
    body, stage = model.backbone.body, FEATURE_STRIDES.index(from_stride)
    if isinstance(body, ResNet):
        return [body.layer1, body.layer2, body.layer3, body.layer4][stage:]
    if hasattr(body, "taps"):
        return list(body.net._blocks[body.taps[stage - 1] + 1 :])
    raise ValueError(f"cannot fine-tune the encoder of backbone {model.backbone.name!r}")


def features_with_grad(model: PRN, images: Tensor) -> list[Tensor]:
    """The backbone's 4 maps with autograd on: ``extract_features`` without its no_grad."""
    if model.config.intensity_normalisation == "image":
        images = normalise_intensity(images)
    return list(model.backbone(images))


def refit_prototypes(model: PRN, normals: Tensor, seed: int) -> None:
    """Prototypes from the encoder as it is now, with the first fit's images and seed."""
    model.fit_prototypes(normals, n_images=len(normals), seed=seed)


def finetune_run(
    config: TrainConfig,
    out: Path,
    from_stride: int,
    encoder_lr_scale: float = 0.1,
    refit_every: int = 300,
    head_only_steps: int = 200,
) -> tuple[PRN, dict]:
    """Train ``config``'s run (on CPU) with the encoder from ``from_stride`` on trainable too,
    then fill the memory bank (if any) and score the test set; returns the model and metrics."""
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    split = config_split(config, read_records(config, out / ".cache"))
    channels, dataset = training_dataset(config, split, build_transform(config, split))
    model = PRN(config.model_config(), pretrained=config.pretrained)
    model.input_channels = channels
    blocks = trainable_blocks(model, from_stride)
    encoder_params = [p for block in blocks for p in block.parameters()]
    for param in encoder_params:
        param.requires_grad_(True)
    head_params = [
        p for name, p in model.named_parameters() if p.requires_grad and "backbone." not in name
    ]
    groups = [{"params": head_params, "lr": config.lr}]
    if encoder_params:
        groups.append({"params": encoder_params, "lr": config.lr * encoder_lr_scale})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine(config.steps))
    rows = prototype_rows(split, config.prototype_share, config.seed)
    normals = torch.stack([dataset.load(row) for row in rows])
    model.fit_prototypes(normals, n_images=len(normals), seed=config.seed)
    # Stride-32 blocks feed only the decoder; earlier ones change the prototyped maps.
    refit = from_stride == 16
    head_only_from = config.steps - head_only_steps if refit else config.steps
    loader = DataLoader(
        dataset,
        batch_sampler=_StepBatches(
            len(dataset), config.batch_size, config.steps, 0, config.seed, _Dist()
        ),
        collate_fn=_collate,
        generator=torch.Generator().manual_seed(config.seed),
    )
    criterion = PRNLoss()
    model.train()
    step = 0
    for batch in tqdm(loader, total=config.steps, desc="train", unit="step"):
        if step == head_only_from:
            for param in encoder_params:
                param.requires_grad_(False)
            if refit:
                refit_prototypes(model, normals, config.seed)
        elif refit and step and step % refit_every == 0 and step < head_only_from:
            refit_prototypes(model, normals, config.seed)
        images = batch["image"]
        if step < head_only_from:
            features = features_with_grad(model, images)
        else:
            features = model.extract_features(images)
        loss, _ = criterion(model.head(features, images.shape[-2:]), batch["mask"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
    train_seconds = time.perf_counter() - started
    if model.memory_bank is not None:
        _fit_memory_bank(model, dataset, config)
    out.mkdir(parents=True, exist_ok=True)
    metrics = evaluate_split(model, split, config, torch.device("cpu"), out)
    metrics["train_seconds"] = round(train_seconds, 1)
    metrics["wall_seconds"] = round(time.perf_counter() - started, 1)
    metrics["peak_rss_mib"] = peak_rss_mib()
    metrics["ablation"] = {
        "from_stride": from_stride,
        "trained_encoder_parameters": sum(p.numel() for p in encoder_params),
        "encoder_lr_scale": encoder_lr_scale,
        "refit_every": refit_every if refit else None,
        "head_only_steps": config.steps - head_only_from,
        "seed": config.seed,
        "steps": config.steps,
    }
    write_text_atomic(out / "metrics.json", json.dumps(nan_to_none(metrics), indent=2))
    return model, metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=SHARED / "mtd", help="MTD root")
    parser.add_argument(
        "--textures", type=Path, help="texture folder (default: ../shared/data/dtd if present)"
    )
    parser.add_argument("--from-stride", type=int, choices=FROM_STRIDES, default=32)
    parser.add_argument("--encoder-lr-scale", type=float, default=0.1)
    parser.add_argument("--refit-every", type=int, default=300, help="steps (--from-stride 16)")
    parser.add_argument("--head-only-steps", type=int, default=200)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/finetune_encoder"))
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"MTD root {str(args.root)!r} is not a folder")
    if args.textures is None and (SHARED / "dtd").is_dir():
        args.textures = SHARED / "dtd"
    elif args.textures is not None and not args.textures.is_dir():
        parser.error(f"--textures {str(args.textures)!r} is not a folder")
    if not 0 < args.encoder_lr_scale:
        parser.error(f"--encoder-lr-scale must be > 0, got {args.encoder_lr_scale}")
    if not 0 < args.refit_every:
        parser.error(f"--refit-every must be > 0, got {args.refit_every}")
    if not 0 <= args.head_only_steps < args.steps:
        parser.error(f"--head-only-steps must be in [0, --steps), got {args.head_only_steps}")
    config = train_config(
        MODEL,
        root=str(args.root),
        textures=str(args.textures) if args.textures else None,
        seed=args.seed,
        steps=args.steps,
        device="cpu",
    )
    _, metrics = finetune_run(
        config,
        args.out,
        args.from_stride,
        args.encoder_lr_scale,
        args.refit_every,
        args.head_only_steps,
    )
    metrics["ablation"]["model"] = MODEL
    print(json.dumps({**{k: metrics[k] for k in METRICS}, **metrics["ablation"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
