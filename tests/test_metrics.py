"""Tests of prn_model.metrics against sklearn and a brute-force AUPRO reference."""

import math
import time

import cv2
import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from prn_model.metrics import METRIC_NAMES, aupro, auroc, average_precision, evaluate, f1_max

# --------------------------------------------------------------------------- references


def sklearn_f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0
    )
    return float(f1.max())


def assert_matches_sklearn(scores: np.ndarray, labels: np.ndarray) -> None:
    reference_scores = np.asarray(scores).ravel()
    reference_labels = np.asarray(labels).ravel()
    assert auroc(scores, labels) == pytest.approx(
        roc_auc_score(reference_labels, reference_scores), abs=1e-12
    )
    assert average_precision(scores, labels) == pytest.approx(
        average_precision_score(reference_labels, reference_scores), abs=1e-12
    )
    assert f1_max(scores, labels) == pytest.approx(
        sklearn_f1_max(reference_scores, reference_labels), abs=1e-12
    )


def brute_force_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Loop over every distinct threshold; PRO and FPR counted directly; cut trapezoid."""
    masks = masks > 0.5
    regions = []
    for image_index, mask in enumerate(masks):
        n_labels, labelled = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        regions += [(image_index, labelled == label) for label in range(1, n_labels)]
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    for threshold in sorted(set(maps.ravel().tolist()), reverse=True):
        above = maps >= threshold
        fprs.append(np.count_nonzero(above & normal) / np.count_nonzero(normal))
        pros.append(np.mean([above[index][region].mean() for index, region in regions]))
    area = 0.0
    for x0, x1, y0, y1 in zip(fprs[:-1], fprs[1:], pros[:-1], pros[1:]):
        if x0 >= fpr_limit:
            break
        if x1 <= fpr_limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y_at_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            area += (fpr_limit - x0) * (y0 + y_at_limit) / 2
    return area / fpr_limit


def random_masks(rng: np.random.Generator, n_images: int, size: int, n_blobs: int) -> np.ndarray:
    """Masks with several blobs per image (some touching only diagonally), a few left empty."""
    masks = np.zeros((n_images, size, size), dtype=np.uint8)
    for mask in masks[1:]:
        for _ in range(rng.integers(0, n_blobs + 1)):
            y, x = rng.integers(0, size - 1, 2)
            height, width = rng.integers(1, size // 3 + 1, 2)
            mask[y : y + height, x : x + width] = 1
        diagonal = rng.integers(0, size - 1, 2)
        mask[diagonal[0], diagonal[1]] = mask[diagonal[0] + 1, diagonal[1] + 1] = 1
    return masks


# --------------------------------------------------------------------------- auroc / ap / f1


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_binary_metrics_match_sklearn_with_ties(seed: int, dtype: type) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 3000))
    scores = rng.integers(-5, 6, size).astype(dtype)  # few distinct values: many ties
    labels = rng.integers(0, 2, size)
    labels[:2] = [0, 1]
    assert_matches_sklearn(scores, labels)


def test_float64_scores_not_representable_in_float32_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    scores = np.repeat(rng.normal(size=500), 3)  # float64 fine structure with ties
    labels = rng.integers(0, 2, scores.size)
    assert_matches_sklearn(scores, labels)
    assert_matches_sklearn(scores + 1e-12, labels)


def test_accepts_torch_tensors_bool_labels_and_any_shape() -> None:
    rng = np.random.default_rng(1)
    scores = rng.random((4, 5, 6)).astype(np.float32)
    labels = rng.random((4, 5, 6)) > 0.7
    expected = roc_auc_score(labels.ravel(), scores.ravel())
    assert auroc(torch.from_numpy(scores), torch.from_numpy(labels)) == pytest.approx(expected)
    assert auroc(scores, labels.astype(np.float32)) == pytest.approx(expected)
    assert auroc(scores.astype(np.float16), labels) == pytest.approx(
        roc_auc_score(labels.ravel(), scores.astype(np.float16).ravel())
    )


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([-1e30, -2.5, -0.0, 0.0, 1e-40, 0.1, 0.5, 3.0, 7e20]),
            st.booleans(),
        ),
        min_size=2,
        max_size=60,
    )
)
def test_property_heavy_ties_match_sklearn(pairs: list[tuple[float, bool]]) -> None:
    scores = np.array([score for score, _ in pairs])
    labels = np.array([label for _, label in pairs])
    assume(labels.any() and not labels.all())
    assert_matches_sklearn(scores, labels)
    assert_matches_sklearn(scores.astype(np.float32), labels)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(allow_nan=False, allow_infinity=False, width=32),
            st.integers(0, 1),
        ),
        min_size=2,
        max_size=80,
    ),
    st.sampled_from([np.float32, np.float64]),
)
def test_property_arbitrary_floats_match_sklearn(
    pairs: list[tuple[float, int]], dtype: type
) -> None:
    scores = np.array([score for score, _ in pairs], dtype=dtype)
    labels = np.array([label for _, label in pairs])
    assume(0 < labels.sum() < labels.size)
    assert_matches_sklearn(scores, labels)


def test_perfect_and_inverted_scores() -> None:
    labels = np.array([0, 0, 0, 1, 1, 0, 1])
    perfect = labels * 2.0 - 1.0
    assert auroc(perfect, labels) == 1.0
    assert average_precision(perfect, labels) == 1.0
    assert f1_max(perfect, labels) == 1.0
    inverted = -perfect
    assert auroc(inverted, labels) == 0.0
    # Best F1 of the inverted ranking is "everything is anomalous": P = 3/7, R = 1.
    assert f1_max(inverted, labels) == pytest.approx(2 * (3 / 7) / (3 / 7 + 1))
    assert average_precision(inverted, labels) == pytest.approx(
        average_precision_score(labels, inverted)
    )
    constant = np.zeros(labels.size)
    assert auroc(constant, labels) == 0.5


def test_undefined_binary_metrics_are_nan() -> None:
    scores = np.array([0.1, 0.4, 0.3])
    assert math.isnan(auroc(scores, [0, 0, 0]))
    assert math.isnan(auroc(scores, [1, 1, 1]))
    assert math.isnan(average_precision(scores, [0, 0, 0]))
    assert math.isnan(f1_max(scores, [0, 0, 0]))
    assert average_precision(scores, [1, 1, 1]) == 1.0
    assert f1_max(scores, [1, 1, 1]) == 1.0


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, 0.2, 0.3], [0, 1], r"\(3,\).*\(2,\)"),
        ([0.1, float("nan"), 0.3], [0, 1, 0], "NaN"),
        ([0.1, float("inf"), 0.3], [0, 1, 0], "infinite"),
        ([0.1, 0.2, 0.3], [0, 2, 1], r"only 0 and 1.*\[2\]"),
        ([0.1, 0.2, 0.3], [0, 0.5, 1], r"only 0 and 1"),
        ([], [], "empty"),
        (["a", "b"], [0, 1], "numeric"),
    ],
)
def test_binary_metrics_reject_bad_input(scores: list, labels: list, message: str) -> None:
    for metric in (auroc, average_precision, f1_max):
        with pytest.raises(ValueError, match=message):
            metric(scores, labels)


# --------------------------------------------------------------------------- aupro


@pytest.mark.parametrize("seed", range(8))
def test_aupro_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(6, 14))
    masks = random_masks(rng, n_images=int(rng.integers(2, 5)), size=size, n_blobs=3)
    levels = int(rng.integers(3, 40))  # quantised scores: ties within and across classes
    maps = rng.integers(0, levels, masks.shape) / levels + 0.3 * masks * rng.random(masks.shape)
    for fpr_limit in (0.3, 0.05, 1.0):
        assert aupro(maps, masks, fpr_limit=fpr_limit) == pytest.approx(
            brute_force_aupro(maps, masks, fpr_limit), abs=1e-12
        )


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(1, 3),
    st.integers(2, 7),
    st.integers(1, 6),
)
def test_property_aupro_matches_brute_force(
    seed: int, n_images: int, size: int, levels: int
) -> None:
    rng = np.random.default_rng(seed)
    masks = rng.random((n_images, size, size)) > 0.7
    maps = rng.integers(0, levels, masks.shape).astype(np.float32)
    assume(masks.any() and not masks.all())
    assert aupro(maps, masks) == pytest.approx(brute_force_aupro(maps, masks), abs=1e-12)


def test_aupro_hand_checked_cases() -> None:
    masks = np.zeros((2, 4, 4), dtype=np.uint8)
    masks[1, 0, 0] = masks[1, 1, 1] = 1  # one region under 8-connectivity
    masks[1, 3, 3] = 1  # a second region
    perfect = masks.astype(np.float64)
    assert aupro(perfect, masks) == 1.0

    # Every normal pixel scores between the two pixels of the diagonal region, so PRO stays at
    # (1/2 + 1) / 2 = 0.75 while FPR goes 0 -> 1 (4-connectivity would give 2/3).
    diagonal = np.full((2, 4, 4), 0.75)
    diagonal[1, 0, 0] = diagonal[1, 3, 3] = 1.0
    diagonal[1, 1, 1] = 0.5
    assert aupro(diagonal, masks) == pytest.approx(0.75)

    # All scores tied: the curve is the diagonal (0, 0) -> (1, 1); area to 0.3 is 0.045.
    assert aupro(np.zeros((2, 4, 4)), masks) == pytest.approx(0.15)


def test_aupro_anomalous_image_with_empty_mask_adds_no_region() -> None:
    masks = np.zeros((2, 3, 3), dtype=bool)
    masks[0, 0, 0] = True
    maps = np.zeros((2, 3, 3))
    maps[0, 0, 0] = 1.0
    # The empty second mask only adds normal pixels, none outranking the region: still 1.0.
    assert aupro(maps, masks) == 1.0
    assert aupro(maps[:1], masks[:1]) == 1.0


def test_aupro_undefined_cases_are_nan_and_bad_input_raises() -> None:
    assert math.isnan(aupro(np.random.default_rng(0).random((2, 3, 3)), np.zeros((2, 3, 3))))
    assert math.isnan(aupro(np.zeros((1, 2, 2)), np.ones((1, 2, 2))))
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(np.zeros((1, 2, 2)), np.eye(2)[None], fpr_limit=0.0)
    with pytest.raises(ValueError, match=r"\(1, 2, 2\).*\(1, 2, 3\)"):
        aupro(np.zeros((1, 2, 3)), np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        aupro(np.zeros((2, 2)), np.zeros((2, 2)))


# --------------------------------------------------------------------------- evaluate


def make_test_set(seed: int = 0, n_normal: int = 4, n_anomalous: int = 6, size: int = 12):
    rng = np.random.default_rng(seed)
    n_images = n_normal + n_anomalous
    labels = np.array([0] * n_normal + [1] * n_anomalous)
    masks = random_masks(rng, n_images, size, n_blobs=2)
    masks[:n_normal] = 0
    masks[-1] = 0  # anomalous image without annotated pixels
    maps = rng.random(masks.shape) + 0.6 * masks
    image_scores = maps.max(axis=(1, 2)) + 0.3 * labels * rng.random(n_images)
    types = ["good"] * n_normal + [["scratch", "hole"][i % 2] for i in range(n_anomalous)]
    return image_scores, labels, maps, masks, types


def expected_metrics(image_scores, labels, maps, masks) -> dict[str, float]:
    pixel_labels = masks.ravel() > 0.5
    return {
        "image_auroc": roc_auc_score(labels, image_scores),
        "image_ap": average_precision_score(labels, image_scores),
        "image_f1_max": sklearn_f1_max(image_scores, labels),
        "pixel_auroc": roc_auc_score(pixel_labels, maps.ravel()),
        "pixel_ap": average_precision_score(pixel_labels, maps.ravel()),
        "pixel_f1_max": sklearn_f1_max(maps.ravel(), pixel_labels),
        "aupro": brute_force_aupro(maps, masks),
    }


def test_evaluate_matches_references_overall_and_per_defect_type() -> None:
    image_scores, labels, maps, masks, types = make_test_set()
    results = evaluate(image_scores, labels, maps, masks, defect_types=types)
    assert set(results) == {*METRIC_NAMES, "per_defect_type"}
    expected = expected_metrics(image_scores, labels, maps, masks)
    assert {name: results[name] for name in METRIC_NAMES} == pytest.approx(expected, abs=1e-12)
    assert all(type(results[name]) is float for name in METRIC_NAMES)

    assert list(results["per_defect_type"]) == ["scratch", "hole"]
    for defect_type, metrics in results["per_defect_type"].items():
        subset = [i for i, label in enumerate(labels) if not label or types[i] == defect_type]
        expected = expected_metrics(
            image_scores[subset], labels[subset], maps[subset], masks[subset]
        )
        assert metrics == pytest.approx(expected, abs=1e-12)


def test_evaluate_accepts_torch_and_any_mask_dtype() -> None:
    image_scores, labels, maps, masks, _ = make_test_set(seed=1)
    reference = evaluate(image_scores, labels, maps, masks)
    assert reference["per_defect_type"] == {}
    for mask_variant in (masks * 255, masks.astype(np.float32), masks.astype(bool)):
        assert evaluate(image_scores, labels, maps, mask_variant) == reference
    as_torch = evaluate(
        torch.from_numpy(image_scores),
        torch.from_numpy(labels),
        torch.from_numpy(maps),
        torch.from_numpy(masks),
    )
    assert as_torch == reference


def test_evaluate_undefined_metrics_are_nan() -> None:
    rng = np.random.default_rng(2)
    maps = rng.random((3, 5, 5))
    all_normal = evaluate(maps.max(axis=(1, 2)), [0, 0, 0], maps, np.zeros((3, 5, 5)))
    assert all(math.isnan(all_normal[name]) for name in METRIC_NAMES)

    masks = np.zeros((3, 5, 5))
    masks[1, 1:3, 1:3] = 1
    results = evaluate([0.1, 0.9, 0.8], [0, 1, 1], maps, masks, defect_types=["ok", "a", "b"])
    assert results["image_auroc"] == 1.0
    assert not math.isnan(results["aupro"])
    type_b = results["per_defect_type"]["b"]  # anomalous image without annotated pixels
    assert type_b["image_auroc"] == 1.0
    assert all(math.isnan(type_b[name]) for name in ("pixel_auroc", "pixel_ap", "aupro"))

    no_normal_image = evaluate([0.2, 0.9], [1, 1], maps[1:], masks[1:])
    assert math.isnan(no_normal_image["image_auroc"])
    assert no_normal_image["image_ap"] == 1.0
    assert not math.isnan(no_normal_image["pixel_auroc"])


def test_evaluate_rejects_bad_input() -> None:
    image_scores, labels, maps, masks, types = make_test_set()
    n_images = labels.size
    with pytest.raises(ValueError, match=r"masks shape \(10, 12, 11\).*maps shape \(10, 12, 12\)"):
        evaluate(image_scores, labels, maps, masks[:, :, :-1])
    with pytest.raises(ValueError, match=r"image_scores shape \(9,\).*\(10, 12, 12\)"):
        evaluate(image_scores[:-1], labels, maps, masks)
    with pytest.raises(ValueError, match=r"image_labels shape \(11,\)"):
        evaluate(image_scores, np.append(labels, 1), maps, masks)
    with pytest.raises(ValueError, match=r"image_scores shape \(10, 1\)"):
        evaluate(image_scores[:, None], labels, maps, masks)
    bad_maps = maps.copy()
    bad_maps[3, 2, 1] = np.nan
    with pytest.raises(ValueError, match="maps .*NaN"):
        evaluate(image_scores, labels, bad_maps, masks)
    with pytest.raises(ValueError, match="image_scores .*NaN"):
        evaluate(np.full(n_images, np.nan), labels, maps, masks)
    with pytest.raises(ValueError, match=r"defect_types has 9 entries.*\(10\)"):
        evaluate(image_scores, labels, maps, masks, defect_types=types[:-1])
    normal_with_defect = masks.copy()
    normal_with_defect[0, 0, 0] = 1
    with pytest.raises(ValueError, match=r"labelled normal.*\[0\]"):
        evaluate(image_scores, labels, maps, normal_with_defect)
    with pytest.raises(ValueError, match="only 0 and 1"):
        evaluate(image_scores, labels * 2, maps, masks)


@pytest.mark.slow
def test_evaluate_realistic_size_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """300 maps of 256x256 (20M pixels): prints the time, checks a strongly separated result."""
    rng = np.random.default_rng(0)
    n_images, n_normal = 300, 100
    masks = np.zeros((n_images, 256, 256), dtype=np.uint8)
    for mask in masks[n_normal:]:
        y, x = rng.integers(0, 200, 2)
        mask[y : y + rng.integers(5, 50), x : x + rng.integers(5, 50)] = 1
    maps = (rng.random(masks.shape, dtype=np.float32) + 2.0 * masks).astype(np.float32)
    labels = np.array([0] * n_normal + [1] * (n_images - n_normal))
    types = ["good"] * n_normal + ["a", "b", "c", "d"] * ((n_images - n_normal) // 4)
    start = time.perf_counter()
    results = evaluate(maps.max(axis=(1, 2)), labels, maps, masks, defect_types=types)
    elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(f"\nevaluate on {n_images} maps of 256x256 with 4 defect types: {elapsed:.2f} s")
    assert {name: results[name] for name in METRIC_NAMES} == pytest.approx(
        dict.fromkeys(METRIC_NAMES, 1.0)
    )
    assert set(results["per_defect_type"]) == {"a", "b", "c", "d"}


def test_bfloat16_scores_are_widened_not_a_type_error():
    """CUDA runs under bf16 autocast hand such tensors over; numpy has no bfloat16."""
    scores = torch.tensor([0.1, 0.9, 0.4, 0.8], dtype=torch.bfloat16)
    assert auroc(scores, [0, 1, 0, 1]) == 1.0
