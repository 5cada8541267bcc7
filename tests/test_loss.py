"""PRN loss: focal + smooth L1, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from prn_model.loss import PRNLoss, binary_focal_loss_with_logits


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _pixel(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64).reshape(1, 1, 1, 1)


@pytest.mark.parametrize(("logit", "label"), [(0.3, 1.0), (-1.2, 1.0), (0.7, 0.0), (-2.5, 0.0)])
def test_one_pixel_loss_matches_the_formulas(logit, label):
    p = _sigmoid(logit)
    p_true = p if label == 1.0 else 1.0 - p
    focal = -((1.0 - p_true) ** 2) * math.log(p_true)
    smooth_l1 = 0.5 * (p - label) ** 2  # |p - label| < beta = 1
    total, parts = PRNLoss()(_pixel(logit), _pixel(label))
    assert parts["focal"].item() == pytest.approx(focal, rel=1e-12)
    assert parts["smooth_l1"].item() == pytest.approx(smooth_l1, rel=1e-12)
    assert total.item() == pytest.approx(focal + smooth_l1, rel=1e-12)


def test_alpha_weights_positives_and_negatives():
    logit, alpha = 0.4, 0.25
    p = _sigmoid(logit)
    loss = PRNLoss(smooth_l1_weight=0.0, alpha=alpha)
    positive, _ = loss(_pixel(logit), _pixel(1.0))
    negative, _ = loss(_pixel(logit), _pixel(0.0))
    assert positive.item() == pytest.approx(-alpha * (1 - p) ** 2 * math.log(p), rel=1e-12)
    assert negative.item() == pytest.approx(-(1 - alpha) * p**2 * math.log(1 - p), rel=1e-12)


def test_weights_scale_the_parts_and_small_beta_makes_smooth_l1_linear():
    logits = torch.tensor([[[[2.0, -1.0], [0.0, 3.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    _, parts = PRNLoss()(logits, mask)
    total, _ = PRNLoss(focal_weight=2.0, smooth_l1_weight=0.5)(logits, mask)
    assert total.item() == pytest.approx(
        2 * parts["focal"].item() + 0.5 * parts["smooth_l1"].item()
    )
    _, linear = PRNLoss(smooth_l1_beta=1e-6)(logits, mask)
    expected = (torch.sigmoid(logits) - mask).abs().mean()
    assert linear["smooth_l1"].item() == pytest.approx(expected.item(), abs=1e-6)


def test_gamma_zero_without_alpha_is_binary_cross_entropy():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 5, 5, generator=generator) * 3
    mask = (torch.rand(2, 1, 5, 5, generator=generator) > 0.7).float()
    focal = binary_focal_loss_with_logits(logits, mask, gamma=0.0).mean()
    assert torch.allclose(focal, F.binary_cross_entropy_with_logits(logits, mask))


def test_soft_mask_mixes_the_two_cases_linearly():
    logits = torch.tensor([0.8, -0.3])
    soft = binary_focal_loss_with_logits(logits, torch.tensor([0.25, 0.25]))
    positive = binary_focal_loss_with_logits(logits, torch.ones(2))
    negative = binary_focal_loss_with_logits(logits, torch.zeros(2))
    assert torch.allclose(soft, 0.25 * positive + 0.75 * negative)


def test_perfect_prediction_costs_almost_nothing():
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:5, 3:7] = 1.0
    logits = (mask * 2 - 1) * 30.0
    total, parts = PRNLoss()(logits, mask)
    assert total.item() < 1e-12
    assert parts["focal"].item() < 1e-12 and parts["smooth_l1"].item() < 1e-12


def test_extreme_logits_give_finite_loss_and_gradients():
    logits = torch.tensor([[[[1e4, -1e4], [1e4, -1e4]]]], requires_grad=True)
    mask = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])
    total, _ = PRNLoss()(logits, mask)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(logits.grad).all()
    assert total.item() > 1000  # two pixels confidently wrong by 1e4 logits


def test_gradient_pushes_logits_towards_the_mask():
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    PRNLoss()(logits, mask)[0].backward()
    assert (logits.grad[mask.bool()] < 0).all() and (logits.grad[~mask.bool()] > 0).all()


def test_bool_and_integer_masks_are_accepted():
    logits = torch.randn(1, 1, 3, 3)
    mask = torch.rand(1, 1, 3, 3) > 0.5
    reference, _ = PRNLoss()(logits, mask.float())
    assert torch.equal(PRNLoss()(logits, mask)[0], reference)
    assert torch.equal(PRNLoss()(logits, mask.to(torch.uint8))[0], reference)


@pytest.mark.parametrize(
    ("logits", "mask", "message"),
    [
        (torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5), "shape"),
        (torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4), "shape"),
        (torch.zeros(2, 4, 4), torch.zeros(2, 4, 4), r"\(B, 1, H, W\)"),
        (torch.zeros(2, 2, 4, 4), torch.zeros(2, 2, 4, 4), r"\(B, 1, H, W\)"),
        (torch.zeros(1, 1, 2, 2, dtype=torch.long), torch.zeros(1, 1, 2, 2), "float"),
        (torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 255.0), r"\[0, 1\]"),
        (torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), float("nan")), r"\[0, 1\]"),
        (torch.zeros(1, 1, 2, 2), [[0.0]], "shape"),
    ],
)
def test_bad_inputs_raise_value_error(logits, mask, message):
    with pytest.raises(ValueError, match=message):
        PRNLoss()(logits, mask)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"focal_weight": -1.0},
        {"focal_weight": 0.0, "smooth_l1_weight": 0.0},
        {"gamma": -0.5},
        {"alpha": 1.5},
        {"smooth_l1_beta": -1.0},
        {"gamma": float("nan")},
    ],
)
def test_bad_settings_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        PRNLoss(**kwargs)


@pytest.mark.parametrize("name", ["gamma", "smooth_l1_beta", "focal_weight"])
def test_infinite_loss_settings_are_refused(name):
    """inf passes a ``>= 0`` test; it would give a NaN loss or silence a term."""
    with pytest.raises(ValueError, match=f"{name} must be a finite non-negative number, got inf"):
        PRNLoss(**{name: math.inf})
