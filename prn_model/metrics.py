"""Evaluation metrics for anomaly detection (image level) and localisation (pixel level).

Every metric here is built on one primitive: sort the scores once in descending order, then sweep
*all* distinct score values as thresholds with cumulative sums (the construction of scikit-learn's
``_binary_clf_curve``). A threshold ``t`` classifies a sample as anomalous when ``score >= t``; tied
scores always move together, which is how ties are handled in sklearn's ROC and PR curves. The
results therefore match ``roc_auc_score``, ``average_precision_score`` and
``precision_recall_curve`` exactly (up to float rounding), and cost O(n log n) for the sort plus a
few O(n) vectorised passes, which matters at pixel level (300 maps of 256x256 = 20M pixels).

:func:`evaluate` sorts all pixels of all maps once and derives pixel AUROC, AP, F1-max and AUPRO,
for all images and for every defect type, from that single order.

Undefined metrics are returned as NaN instead of raising, so that a whole evaluation table can be
produced even when, e.g., a defect type has no annotated pixels:

* AUROC needs both classes (NaN if there are no positives or no negatives);
* AP and F1-max need at least one positive (NaN otherwise). With positives only they are 1.0,
  as in sklearn;
* AUPRO needs at least one ground-truth region and one normal pixel (NaN otherwise).

Malformed input (shape or length mismatches, NaN/infinite scores, non-binary labels, empty
arrays) raises ``ValueError`` naming the offending shapes or values.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.ndimage
import torch

ArrayLike = np.ndarray | torch.Tensor

METRIC_NAMES = (
    "image_auroc",
    "image_ap",
    "image_f1_max",
    "pixel_auroc",
    "pixel_ap",
    "pixel_f1_max",
    "aupro",
)

# Ground-truth regions are 8-connected within one image and never span two images of a stack.
_EIGHT_CONNECTED_PER_IMAGE = np.zeros((3, 3, 3), dtype=bool)
_EIGHT_CONNECTED_PER_IMAGE[1] = True

_INDEX_BITS = 32

AUPRO_FPR_LIMIT = 0.3


# --------------------------------------------------------------------------- input checks


def _to_numpy(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        if values.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
            values = values.float()
        return values.detach().cpu().numpy()
    try:
        return np.asarray(values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} cannot be converted to an array: {error}") from error


def _as_scores(values: Any, name: str) -> np.ndarray:
    """Float array of finite scores; float16/ints/bools are widened so that sorting is exact."""
    array = _to_numpy(values, name)
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    elif array.dtype.kind in "biu":
        array = array.astype(np.float64)
    elif array.dtype.kind != "f":
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError(
            f"{name} (shape {array.shape}) contains {np.count_nonzero(~np.isfinite(array))} "
            "NaN or infinite values"
        )
    return array


def _as_binary_labels(values: Any, name: str) -> np.ndarray:
    """Boolean array from labels that must be exactly 0/1 (or bool): anything else is a bug."""
    array = _to_numpy(values, name)
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if array.dtype == bool:
        return array
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric 0/1 labels, got dtype {array.dtype}")
    is_one = array == 1
    if not (is_one | (array == 0)).all():
        bad = np.unique(array[~(is_one | (array == 0))])[:5]
        raise ValueError(f"{name} must contain only 0 and 1, found {bad.tolist()}")
    return is_one


def _as_maps_and_masks(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated (N,H,W) score maps and boolean masks (mask > 0.5 means anomalous)."""
    maps = _as_scores(maps, "maps")
    masks = _to_numpy(masks, "masks")
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (N, H, W), got {maps.shape}")
    if masks.shape != maps.shape:
        raise ValueError(f"masks shape {masks.shape} does not match maps shape {maps.shape}")
    if masks.dtype == bool:
        return maps, masks
    if masks.dtype.kind not in "biuf":
        raise ValueError(f"masks must be numeric or bool, got dtype {masks.dtype}")
    if masks.dtype.kind == "f" and np.isnan(masks).any():
        raise ValueError(f"masks (shape {masks.shape}) contain NaN values")
    return maps, masks > 0.5


def _as_same_shape(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    scores = _as_scores(scores, "scores")
    labels = _as_binary_labels(labels, "labels")
    if scores.shape != labels.shape:
        raise ValueError(f"scores shape {scores.shape} does not match labels shape {labels.shape}")
    return scores.ravel(), labels.ravel()


# --------------------------------------------------------------------------- sorted sweep


def _sort_descending(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order that sorts 1-D finite ``scores`` descending (ties in any order), and tie keys.

    The tie keys are aligned with the sorted order and equal between neighbours exactly where
    the scores are tied; only that equality pattern is needed to find the thresholds.

    ``np.argsort`` on 20M floats is slow (~4 s on 2 cores). For float32 we instead sort one
    uint64 per score, an order-preserving 32-bit image of the float in the high half and the
    element index in the low half, with numpy's SIMD sort (~1.5 s); the high halves are the tie
    keys. float64 scores that are exactly representable in float32 take the same path (no tie
    changes); other float64 scores fall back to ``torch.sort``.
    """
    if scores.dtype == np.float64:
        with np.errstate(over="ignore"):
            narrowed = scores.astype(np.float32)
        if np.array_equal(narrowed, scores):
            scores = narrowed
    if scores.dtype != np.float32 or scores.size >= 2**_INDEX_BITS:
        values, order = torch.sort(torch.from_numpy(scores), descending=True)
        return order.numpy(), values.numpy()
    # Adding +0.0 turns -0.0 into +0.0, so that equal scores share one key.
    bits = (scores + np.float32(0.0)).view(np.uint32)
    # Unsigned order of this key is the descending order of the floats: non-negative floats are
    # bit-inverted into the lower half, negative floats (sign bit set) keep their bits.
    descending_key = np.where(bits >> np.uint32(31), bits, ~bits & np.uint32(0x7FFFFFFF))
    packed = descending_key.astype(np.uint64) << np.uint64(_INDEX_BITS)
    packed |= np.arange(scores.size, dtype=np.uint64)
    packed.sort()
    halves = packed.view(np.uint32).reshape(-1, 2)
    index_half, key_half = (0, 1) if np.little_endian else (1, 0)
    return halves[:, index_half].astype(np.intp), halves[:, key_half].copy()


def _threshold_ends(sorted_ties: np.ndarray) -> np.ndarray:
    """Index of the last element of each run of tied scores: one entry per distinct threshold."""
    changes = np.flatnonzero(sorted_ties[1:] != sorted_ties[:-1])
    return np.append(changes, sorted_ties.size - 1)


def _curve_metrics(ends: np.ndarray, sorted_labels: np.ndarray) -> dict[str, float]:
    """AUROC, AP and F1-max from one descending sweep over all distinct thresholds.

    At the threshold ending at sorted index e, the e + 1 samples above it hold TP positives:
    * AUROC is the trapezoid area under (FP/N, TP/P);
    * AP is sklearn's step-wise sum of recall increase x precision;
    * F1 = 2PR / (P + R) = 2 TP / (TP + FP + P), maximised over thresholds.
    """
    # Counts stay exact in float64 (< 2**53) and float64 keeps numpy on its fast BLAS paths.
    n_above = ends + 1.0
    true_positives = np.cumsum(sorted_labels, dtype=np.float64)[ends]
    n_positive = float(true_positives[-1])
    n_negative = float(n_above[-1]) - n_positive
    nan = float("nan")
    if n_positive == 0:
        return {"auroc": nan, "ap": nan, "f1_max": nan}
    new_true_positives = np.diff(true_positives, prepend=0.0)
    average_precision = float(np.dot(new_true_positives, true_positives / n_above)) / n_positive
    f1_max = float((2 * true_positives / (n_above + n_positive)).max())
    auroc = nan
    if n_negative > 0:
        new_false_positives = np.diff(n_above, prepend=0.0) - new_true_positives
        # Trapezoid: width new FP, height TP before + TP after the threshold.
        twice_area = np.dot(new_false_positives, 2 * true_positives - new_true_positives)
        auroc = float(twice_area) / (2 * n_positive * n_negative)
    return {"auroc": auroc, "ap": average_precision, "f1_max": f1_max}


def _area_up_to(x: np.ndarray, y: np.ndarray, x_limit: float) -> float:
    """Trapezoid area under (x, y) for x in [x[0], x_limit]; x is non-decreasing.

    The segment that crosses ``x_limit`` is cut there with y linearly interpolated, as in the
    MVTec AD reference evaluation code.
    """
    n_inside = int(np.searchsorted(x, x_limit, side="right"))
    area = float(np.trapezoid(y[:n_inside], x[:n_inside]))
    if n_inside < x.size:
        x0, x1, y0, y1 = x[n_inside - 1], x[n_inside], y[n_inside - 1], y[n_inside]
        y_at_limit = y0 + (y1 - y0) * (x_limit - x0) / (x1 - x0)
        area += 0.5 * (y0 + y_at_limit) * (x_limit - x0)
    return area


def _aupro_from_sweep(
    ends: np.ndarray,
    sorted_regions: np.ndarray,
    region_weights: np.ndarray,
    n_regions: int,
    fpr_limit: float,
) -> float:
    """Normalised area under PRO(FPR) from a descending sweep over all pixels.

    ``sorted_regions`` holds each pixel's region id (0 = normal pixel) and ``region_weights``
    1/|r| per region. The cumulative weight at a threshold is the sum over regions of the
    fraction of the region above it; divided by the number of regions it is the PRO, exact at
    every distinct threshold. Only the thresholds up to the first one past ``fpr_limit`` are
    evaluated.
    """
    false_positives = np.cumsum(sorted_regions == 0, dtype=np.int64)[ends]
    n_normal = int(false_positives[-1])
    if n_regions == 0 or n_normal == 0:
        return float("nan")
    # One extra point beyond the first past the limit absorbs rounding in the comparison.
    n_needed = int(np.searchsorted(false_positives, fpr_limit * n_normal, side="right")) + 2
    ends, false_positives = ends[:n_needed], false_positives[:n_needed]
    weights = region_weights[sorted_regions[: ends[-1] + 1]]
    pro = np.concatenate(([0.0], np.cumsum(weights)[ends] / n_regions))
    fpr = np.concatenate(([0.0], false_positives / n_normal))
    return float(_area_up_to(fpr, pro, fpr_limit) / fpr_limit)


# --------------------------------------------------------------------------- public metrics


def _binary_curve_metrics(scores: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    scores, labels = _as_same_shape(scores, labels)
    order, sorted_ties = _sort_descending(scores)
    return _curve_metrics(_threshold_ends(sorted_ties), labels[order])


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve, equal to sklearn's ``roc_auc_score`` (ties count half).

    ``scores`` and ``labels`` (0/1 or bool) may have any shape, as long as it is the same.
    Returns NaN when only one class is present.
    """
    return _binary_curve_metrics(scores, labels)["auroc"]


def average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """Average precision as sklearn's ``average_precision_score`` (no interpolation).

    Returns NaN when there is no positive label (1.0 when all labels are positive).
    """
    return _binary_curve_metrics(scores, labels)["ap"]


def f1_max(scores: ArrayLike, labels: ArrayLike) -> float:
    """Best F1 over all thresholds of the precision-recall curve.

    Returns NaN when there is no positive label.
    """
    return _binary_curve_metrics(scores, labels)["f1_max"]


def aupro(maps: ArrayLike, masks: ArrayLike, fpr_limit: float = AUPRO_FPR_LIMIT) -> float:
    """Normalised area under the per-region-overlap curve up to ``fpr_limit`` (MVTec AD).

    Definition (Bergmann et al., MVTec AD): the regions are the 8-connected components of each
    ground-truth mask (``masks > 0.5``, shape (N, H, W), same as ``maps``). At a threshold t,
    PRO(t) is the mean over all regions of all images of the fraction of the region's pixels
    with score >= t, and FPR(t) is the fraction of all normal pixels of all images with score
    >= t. The curve starts at (0, 0) and has one point per distinct score (found by a single
    descending sort, so the result is exact rather than sampled on a threshold grid); PRO is
    integrated over FPR in [0, fpr_limit] by the trapezoid rule, with PRO interpolated linearly
    at exactly ``fpr_limit``, and divided by ``fpr_limit`` so that a perfect map scores 1.0.

    Anomalous images with an empty mask add no region. Returns NaN when there is no region or
    no normal pixel.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    pixels = _SortedPixels(*_as_maps_and_masks(maps, masks))
    return pixels.metrics(np.ones(pixels.n_images, dtype=bool), fpr_limit)["aupro"]


class _SortedPixels:
    """All pixels of a stack of maps in descending score order, with their region and image.

    Built once per evaluation; any subset of images is then evaluated by filtering this order
    (O(n)) instead of sorting again.
    """

    def __init__(self, maps: np.ndarray, masks: np.ndarray) -> None:
        regions, n_regions = scipy.ndimage.label(masks, structure=_EIGHT_CONNECTED_PER_IMAGE)
        region_sizes = np.bincount(regions.ravel(), minlength=n_regions + 1)
        self.region_weights = np.zeros(n_regions + 1)
        self.region_weights[1:] = 1.0 / region_sizes[1:]
        # Image of each region (entry 0, the normal pixels, is never counted).
        self.region_images = np.zeros(n_regions + 1, dtype=np.intp)
        self.region_images[regions[masks]] = np.nonzero(masks)[0]
        self.n_images = maps.shape[0]

        order, self.ties = _sort_descending(maps.ravel())
        self.regions = regions.ravel()[order]
        image_dtype = np.uint16 if self.n_images <= 2**16 else np.intp
        self.images = (order // (maps.shape[1] * maps.shape[2])).astype(image_dtype)

    def metrics(self, selected_images: np.ndarray, fpr_limit: float) -> dict[str, float]:
        """Pixel AUROC, AP, F1-max and AUPRO over the images where ``selected_images`` is True."""
        if selected_images.all():
            ties, regions = self.ties, self.regions
        else:
            keep = selected_images[self.images]
            ties, regions = self.ties[keep], self.regions[keep]
        ends = _threshold_ends(ties)
        curve = _curve_metrics(ends, regions > 0)
        n_regions = int(np.count_nonzero(selected_images[self.region_images[1:]]))
        return {
            "pixel_auroc": curve["auroc"],
            "pixel_ap": curve["ap"],
            "pixel_f1_max": curve["f1_max"],
            "aupro": _aupro_from_sweep(ends, regions, self.region_weights, n_regions, fpr_limit),
        }


def _image_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    order, sorted_ties = _sort_descending(scores)
    curve = _curve_metrics(_threshold_ends(sorted_ties), labels[order])
    return {f"image_{name}": value for name, value in curve.items()}


def evaluate(
    image_scores: ArrayLike,
    image_labels: ArrayLike,
    maps: ArrayLike,
    masks: ArrayLike,
    defect_types: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """All detection and localisation metrics of a test set.

    Args:
        image_scores: (N,) anomaly score per image.
        image_labels: (N,) 0 = normal, 1 = anomalous.
        maps: (N, H, W) pixel anomaly scores.
        masks: (N, H, W) ground truth, any dtype; > 0.5 is anomalous. A normal image must have an
            empty mask; an anomalous image may have one (it then adds no AUPRO region).
        defect_types: optional (N,) defect type per image; entries of normal images are ignored.

    Returns:
        ``image_auroc``, ``image_ap``, ``image_f1_max``, ``pixel_auroc``, ``pixel_ap``,
        ``pixel_f1_max``, ``aupro`` (FPR limit 0.3) as floats, and ``per_defect_type``: for each
        type of an anomalous image (in order of first appearance), the same seven metrics on
        that type's anomalous images together with ALL normal images (empty without
        ``defect_types``). Undefined metrics are NaN (see the module docstring), e.g. AUROC
        without normal images or AUPRO of a type whose masks are all empty.
    """
    scores = _as_scores(image_scores, "image_scores")
    labels = _as_binary_labels(image_labels, "image_labels")
    maps_array, masks_array = _as_maps_and_masks(maps, masks)
    n_images = maps_array.shape[0]
    for name, array in (("image_scores", scores), ("image_labels", labels)):
        if array.shape != (n_images,):
            raise ValueError(
                f"{name} shape {array.shape} does not match the {n_images} maps of shape "
                f"{maps_array.shape}"
            )
    normal_with_defect = np.flatnonzero(~labels & masks_array.any(axis=(1, 2)))
    if normal_with_defect.size:
        raise ValueError(
            f"images labelled normal have anomalous mask pixels: indices "
            f"{normal_with_defect[:10].tolist()}"
        )
    if defect_types is not None and len(defect_types) != n_images:
        raise ValueError(
            f"defect_types has {len(defect_types)} entries, expected one per image ({n_images})"
        )

    pixels = _SortedPixels(maps_array, masks_array)
    all_images = np.ones(n_images, dtype=bool)
    results: dict[str, Any] = {
        **_image_metrics(scores, labels),
        **pixels.metrics(all_images, AUPRO_FPR_LIMIT),
    }

    anomalous_images_by_type: dict[Any, list[int]] = {}
    if defect_types is not None:
        for index in np.flatnonzero(labels):
            anomalous_images_by_type.setdefault(defect_types[index], []).append(index)
    per_defect_type: dict[Any, dict[str, float]] = {}
    for defect_type, anomalous_images in anomalous_images_by_type.items():
        selected = ~labels
        selected[anomalous_images] = True
        per_defect_type[defect_type] = {
            **_image_metrics(scores[selected], labels[selected]),
            **pixels.metrics(selected, AUPRO_FPR_LIMIT),
        }
    results["per_defect_type"] = per_defect_type
    return results
