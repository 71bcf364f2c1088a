"""Anomaly-detection metrics in plain numpy: AUROC (image / pixel), AUPRO (MVTec PRO curve), F1-max.

Exact rank statistics, no sklearn; built to handle millions of pixels with a single sort.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "auroc",
    "image_auroc",
    "pixel_auroc",
    "aupro",
    "pro_curve",
    "f1_max",
    "f1_max_threshold",
    "threshold_at_percentile",
]


def _as_labels_scores(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).ravel()
    s = np.asarray(scores).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in size: {y.size} vs {s.size}")
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return y != 0, s


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve, i.e. the Mann-Whitney U statistic with average ranks for ties.

    ``labels`` are truthy for anomalous; any shape, flattened. Returns nan when only one class
    is present (the ROC is undefined there, and 0.5 would look like a real result).
    """
    y, s = _as_labels_scores(labels, scores)
    n = y.size
    n_pos = int(np.count_nonzero(y))
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    y_sorted = y[order]
    # Tie groups in the sorted scores; every member of a group gets the group's mean rank.
    starts = np.concatenate(([0], np.flatnonzero(s_sorted[1:] != s_sorted[:-1]) + 1))
    ends = np.concatenate((starts[1:], [n]))
    mean_rank = (starts + ends + 1) / 2.0  # 1-based ranks start+1 .. end
    pos_per_group = np.add.reduceat(y_sorted.astype(np.int64), starts)
    rank_sum = float(np.dot(pos_per_group.astype(np.float64), mean_rank))
    u = rank_sum - n_pos * (n_pos + 1) / 2.0
    return float(u / (float(n_pos) * float(n_neg)))


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Image-level AUROC: ``labels`` (N,) with 1 = anomalous image, ``scores`` (N,) image scores."""
    return auroc(labels, scores)


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float:
    """Pixel-level AUROC over all pixels of all test images; normal images are all-zero masks."""
    masks = np.asarray(masks)
    maps = np.asarray(maps)
    if masks.shape != maps.shape:
        raise ValueError(f"masks {masks.shape} and maps {maps.shape} differ in shape")
    return auroc(masks, maps)


def _as_stack(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"expected (N, H, W) or (H, W), got shape {a.shape}")
    return a


def pro_curve(
    masks: np.ndarray, maps: np.ndarray, num_thresholds: int = 200
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-region-overlap curve: ``(fpr, pro, thresholds)``, ordered by decreasing threshold.

    Regions are the 8-connected components of each ground-truth mask. A pixel is called anomalous
    at threshold t when its score >= t. The curve starts at the point (0, 0) (threshold above the
    maximum, thresholds[0] = inf) and then visits ``num_thresholds`` evenly spaced levels from the
    maximum down to the minimum score. Both fpr and pro are non-decreasing along it.
    """
    masks = _as_stack(masks) != 0
    maps = _as_stack(maps)
    if masks.shape != maps.shape:
        raise ValueError(f"masks {masks.shape} and maps {maps.shape} differ in shape")
    maps = maps.astype(np.float64, copy=False)
    if np.isnan(maps).any():
        raise ValueError("maps contain NaN")
    if num_thresholds < 2:
        raise ValueError("num_thresholds must be >= 2")

    # Global region ids (0 = normal pixel), so one bincount covers every region of every image.
    region_ids = np.zeros(masks.shape, np.int64)
    n_regions = 0
    for i, m in enumerate(masks):
        if not m.any():
            continue
        n, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        region_ids[i] = np.where(lab > 0, lab.astype(np.int64) + n_regions, 0)
        n_regions += n - 1

    lo, hi = float(maps.min()), float(maps.max())
    thresholds = np.linspace(lo, hi, num_thresholds)
    # k = number of thresholds <= score; the pixel is positive exactly at thresholds[:k].
    k = np.searchsorted(thresholds, maps.ravel(), side="right")
    rid = region_ids.ravel()
    nb = num_thresholds + 1

    normal = rid == 0
    n_normal = int(np.count_nonzero(normal))
    normal_counts = np.bincount(k[normal], minlength=nb)
    # positives at threshold j = pixels with k > j: reversed cumulative sum, shifted by one.
    normal_pos = np.cumsum(normal_counts[::-1])[::-1][1:]
    fpr = normal_pos / n_normal if n_normal else np.zeros(num_thresholds)

    if n_regions:
        joint = np.bincount(rid[~normal] * nb + k[~normal], minlength=(n_regions + 1) * nb)
        joint = joint.reshape(n_regions + 1, nb)[1:]
        region_pos = np.cumsum(joint[:, ::-1], axis=1)[:, ::-1][:, 1:]
        sizes = joint.sum(axis=1, keepdims=True)
        pro = (region_pos / sizes).mean(axis=0)
    else:
        pro = np.full(num_thresholds, np.nan)

    # Reverse to decreasing threshold and prepend the empty-prediction point.
    fpr = np.concatenate(([0.0], fpr[::-1]))
    pro = np.concatenate(([0.0], pro[::-1]))
    thr = np.concatenate(([np.inf], thresholds[::-1]))
    return fpr, pro, thr


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3, num_thresholds: int = 200) -> float:
    """Normalised area under the PRO curve for FPR in [0, fpr_limit] (MVTec AD protocol).

    Trapezoidal integration with linear interpolation at the limit, divided by ``fpr_limit`` so a
    perfect map scores 1.0. nan when the ground truth has no anomalous region.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError("fpr_limit must be in (0, 1]")
    fpr, pro, _ = pro_curve(masks, maps, num_thresholds)
    if np.isnan(pro).any():
        return float("nan")
    # Along the curve fpr is non-decreasing; vertical steps (equal fpr) add no area, so the plain
    # trapezoid over the ordered points is right. Cut at the first point beyond the limit.
    beyond = np.flatnonzero(fpr > fpr_limit)
    if beyond.size:
        j = int(beyond[0])
        x0, x1, y0, y1 = fpr[j - 1], fpr[j], pro[j - 1], pro[j]
        y_lim = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
        x = np.concatenate((fpr[:j], [fpr_limit]))
        y = np.concatenate((pro[:j], [y_lim]))
    else:
        # The curve ends below the limit (e.g. every normal pixel at the minimum score): the last
        # operating point holds, since lowering the threshold further changes nothing.
        x = np.concatenate((fpr, [fpr_limit]))
        y = np.concatenate((pro, [pro[-1]]))
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
    return area / fpr_limit


def f1_max_threshold(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Best F1 over all thresholds (predict anomalous when score >= threshold): ``(f1, threshold)``.

    nan, nan when there is no positive label.
    """
    y, s = _as_labels_scores(labels, scores)
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0:
        return float("nan"), float("nan")
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    tp = np.cumsum(y[order])
    fp = np.arange(1, s.size + 1) - tp
    # Only the last index of each tie group is a reachable operating point.
    last = np.concatenate((np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), [s.size - 1]))
    tp, fp = tp[last].astype(np.float64), fp[last].astype(np.float64)
    f1 = 2.0 * tp / (tp + fp + n_pos)
    best = int(np.argmax(f1))
    return float(f1[best]), float(s_sorted[last[best]])


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """Maximum F1 over all score thresholds; nan when there is no positive label."""
    return f1_max_threshold(labels, scores)[0]


def threshold_at_percentile(scores: np.ndarray, percentile: float = 99.0) -> float:
    """Score at the given percentile of (normal) scores, for an operating threshold with a known
    false-positive rate on normal data: e.g. 99 -> about 1% of normal pixels/images flagged."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    s = s[~np.isnan(s)]
    if s.size == 0:
        return float("nan")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError("percentile must be in [0, 100]")
    return float(np.percentile(s, percentile))
