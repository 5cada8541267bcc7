"""PRN training loss: focal loss on the logit map plus smooth L1 on its probabilities.

PRN (Zhang et al., CVPR 2023, Sec. 3.4) trains the segmentation output with a focal loss
(Lin et al. 2017), which down-weights the many easy normal pixels, plus a smooth L1 loss between
the predicted probability map and the mask. The defaults here are our choice, not values taken
from the paper: both weights 1, gamma = 2 (the usual focal default, also DRAEM's), no alpha
balancing, and smooth-L1 beta = 1 (PyTorch's default; since probabilities and masks lie in
[0, 1], beta = 1 makes that term 0.5 * (p - m)^2 everywhere; a smaller beta makes it more L1).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PRNLoss", "binary_focal_loss_with_logits"]


def binary_focal_loss_with_logits(
    logits: Tensor, target: Tensor, gamma: float = 2.0, alpha: float | None = None
) -> Tensor:
    """Element-wise binary focal loss, computed from logits with log-sigmoid (stable).

    loss = -[a * t * (1 - p)^gamma * log(p) + (1 - a) * (1 - t) * p^gamma * log(1 - p)]
    with p = sigmoid(logits), a = alpha (a = 1/2 weighting both sides equally is written as
    alpha=None, which drops the factors). For a binary target this is Lin et al.'s
    -alpha_t (1 - p_t)^gamma log(p_t); a soft target mixes the two cases linearly.
    """
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    # (1 - p)^gamma and p^gamma via exp(gamma * log(.)): finite for any logit, exact 1 for gamma 0
    positive = torch.exp(gamma * log_not_p) * log_p
    negative = torch.exp(gamma * log_p) * log_not_p
    if alpha is not None:
        positive = alpha * positive
        negative = (1.0 - alpha) * negative
    return -(target * positive + (1.0 - target) * negative)


def _non_negative(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value < math.inf  # NaN and inf fail too
    ):
        raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
    return float(value)


class PRNLoss(nn.Module):
    """PRN loss (Sec. 3.4): ``focal_weight * focal + smooth_l1_weight * smooth_l1``, pixel means.

    ``forward(logits, mask)`` takes the network's logit map (B, 1, H, W) and a mask of the same
    shape with values in [0, 1] (float, or bool/int 0/1); returns the scalar loss and a dict
    with the detached parts ``focal``, ``smooth_l1`` and ``total`` for logging.
    """

    def __init__(
        self,
        focal_weight: float = 1.0,
        smooth_l1_weight: float = 1.0,
        gamma: float = 2.0,
        alpha: float | None = None,
        smooth_l1_beta: float = 1.0,
    ) -> None:
        super().__init__()
        self.focal_weight = _non_negative("focal_weight", focal_weight)
        self.smooth_l1_weight = _non_negative("smooth_l1_weight", smooth_l1_weight)
        if self.focal_weight == 0 and self.smooth_l1_weight == 0:
            raise ValueError("at least one of focal_weight and smooth_l1_weight must be > 0")
        self.gamma = _non_negative("gamma", gamma)
        if alpha is not None and not 0 <= _non_negative("alpha", alpha) <= 1:
            raise ValueError(f"alpha must be None or in [0, 1], got {alpha!r}")
        self.alpha = None if alpha is None else float(alpha)
        self.smooth_l1_beta = _non_negative("smooth_l1_beta", smooth_l1_beta)

    def forward(self, logits: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        target = _check_pair(logits, mask)
        focal = binary_focal_loss_with_logits(logits, target, self.gamma, self.alpha).mean()
        smooth_l1 = F.smooth_l1_loss(torch.sigmoid(logits), target, beta=self.smooth_l1_beta)
        total = self.focal_weight * focal + self.smooth_l1_weight * smooth_l1
        parts = {"focal": focal.detach(), "smooth_l1": smooth_l1.detach(), "total": total.detach()}
        return total, parts

    def extra_repr(self) -> str:
        return (
            f"focal_weight={self.focal_weight}, smooth_l1_weight={self.smooth_l1_weight}, "
            f"gamma={self.gamma}, alpha={self.alpha}, smooth_l1_beta={self.smooth_l1_beta}"
        )


def _check_pair(logits: Any, mask: Any) -> Tensor:
    """Validate (B, 1, H, W) float logits and a same-shaped [0, 1] mask; return it as float."""
    if not isinstance(logits, Tensor) or logits.ndim != 4 or logits.shape[1] != 1:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a (B, 1, H, W) tensor, got {shape}")
    if not logits.is_floating_point() or logits.numel() == 0:
        raise ValueError(f"logits must be a non-empty float tensor, got dtype {logits.dtype}")
    if not isinstance(mask, Tensor) or mask.shape != logits.shape:
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"mask must have the logits' shape {tuple(logits.shape)}, got {shape}")
    if mask.is_complex():
        raise ValueError(f"mask must be real-valued, got dtype {mask.dtype}")
    target = mask.to(device=logits.device, dtype=logits.dtype)
    low, high = torch.aminmax(target)
    if not (low >= 0 and high <= 1):  # NaN fails too
        raise ValueError(
            f"mask values must lie in [0, 1], got [{low.item():.4g}, {high.item():.4g}]"
        )
    return target
