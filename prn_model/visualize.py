"""Heatmap overlays: what an inspection engineer looks at first."""

from __future__ import annotations

import cv2
import numpy as np
import torch

__all__ = ["heatmap_overlay"]


def heatmap_overlay(image: torch.Tensor, heat: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image beside it with the anomaly map in JET colours and the mask outlined in white.

    ``image`` is (C,H,W) in [0, 1]; ``heat`` and ``mask`` are (H,W). Returns (H, 2W, 3) uint8.
    """
    if heat.shape != tuple(image.shape[-2:]) or mask.shape != heat.shape:
        raise ValueError(
            f"heat {heat.shape} and mask {mask.shape} must match the image {tuple(image.shape)}"
        )
    rgb = (image.expand(3, -1, -1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    colour = cv2.applyColorMap((np.clip(heat, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    blended = cv2.addWeighted(rgb, 0.55, np.ascontiguousarray(colour[:, :, ::-1]), 0.45, 0)
    edge = cv2.morphologyEx((mask > 0.5).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3)))
    blended[edge > 0] = (255, 255, 255)
    return np.concatenate([rgb, blended], axis=1)
