"""Metrics against hand-computed values and a brute-force pairwise AUROC."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medad_viewer.engine.metrics import (
    aupro,
    auroc,
    f1_max,
    f1_max_threshold,
    image_auroc,
    pixel_auroc,
    pro_curve,
    threshold_at_percentile,
)


def _auroc_pairwise(labels: np.ndarray, scores: np.ndarray) -> float:
    pos = scores[labels == 1]
    neg = scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def test_auroc_hand_value() -> None:
    # Pairs (pos, neg): (0.35>0.1) (0.35<0.4) (0.8>0.1) (0.8>0.4) -> 3/4.
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_auroc_ties_perfect_reversed() -> None:
    assert auroc([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == pytest.approx(0.5)
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(1.0)
    assert auroc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == pytest.approx(0.0)
    # One tied pair out of four counts half: (0.5 vs 0.5) = 0.5, the other three are wins.
    assert auroc([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]) == pytest.approx(3.5 / 4)


def test_auroc_single_class_is_nan() -> None:
    assert math.isnan(auroc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(auroc([1, 1], [0.1, 0.2]))
    assert math.isnan(auroc([], []))


def test_auroc_accepts_bool_int_and_255_labels() -> None:
    s = [0.1, 0.4, 0.35, 0.8]
    for y in ([False, False, True, True], [0, 0, 255, 255], np.array([0, 0, 1, 1], np.uint8)):
        assert auroc(y, s) == pytest.approx(0.75)


def test_auroc_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        auroc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError):
        auroc([0, 1], [0.1, np.nan])


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_pairwise_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    labels = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(int)
    labels[:2] = [0, 1]
    # Coarse integer scores shifted by label: many ties within and across classes.
    scores = rng.integers(0, 8, n) + labels * rng.integers(0, 3, n)
    assert auroc(labels, scores) == pytest.approx(_auroc_pairwise(labels, scores.astype(float)), abs=1e-12)
    cont = rng.normal(size=n) + labels
    assert auroc(labels, cont) == pytest.approx(_auroc_pairwise(labels, cont), abs=1e-12)


def test_image_and_pixel_auroc() -> None:
    rng = np.random.default_rng(1)
    masks = np.zeros((4, 16, 16), bool)
    masks[1, 4:8, 4:8] = True
    masks[3, 10:14, 2:9] = True
    maps = rng.random((4, 16, 16)).astype(np.float32) + masks * 0.3
    assert pixel_auroc(masks, maps) == pytest.approx(auroc(masks.ravel(), maps.ravel()))
    assert pixel_auroc(masks, maps) == pytest.approx(_auroc_pairwise(masks.ravel().astype(int), maps.ravel()))
    assert image_auroc([0, 1, 0, 1], [0.2, 0.9, 0.1, 0.4]) == pytest.approx(1.0)
    assert math.isnan(pixel_auroc(np.zeros((2, 8, 8), bool), rng.random((2, 8, 8))))
    with pytest.raises(ValueError):
        pixel_auroc(masks, maps[:, :8])


def test_auroc_on_millions() -> None:
    """Pixel AUROC over millions of pixels (a series' maps); its speed is a benchmark's business, not a test's."""
    rng = np.random.default_rng(0)
    n = 4_000_000
    labels = rng.random(n) < 0.05
    scores = (rng.random(n) + labels * 0.2).astype(np.float32)
    a = auroc(labels, scores)
    # Two uniforms U and U + 0.2: P(U + 0.2 > U') = 1 - 0.8^2 / 2 = 0.68
    assert abs(a - 0.68) < 0.002


def test_f1_max_hand_value() -> None:
    labels = [1, 0, 1, 1, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.3, 0.2, 0.1]
    # Thresholds (>=): 0.9 -> tp1 fp0 -> 2/(1+0+3)=0.5; 0.8 -> tp1 fp1 -> 2/5=0.4;
    # 0.7 -> tp2 fp1 -> 4/6=0.667; 0.3 -> tp3 fp1 -> 6/7=0.857; 0.2 -> 6/8; 0.1 -> 6/9.
    assert f1_max(labels, scores) == pytest.approx(6 / 7)
    f1, thr = f1_max_threshold(labels, scores)
    assert f1 == pytest.approx(6 / 7) and thr == pytest.approx(0.3)


def test_f1_max_ties_and_edge_cases() -> None:
    # All tied: the only operating points are "nothing" and "everything"; everything -> P=2/4, R=1.
    assert f1_max([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(2 * 0.5 / 1.5)
    # A tie across classes cannot be split: 0.6 holds one pos and one neg.
    # >=0.9: tp1 fp0 -> 2/3; >=0.6: tp2 fp1 -> 4/5; >=0.1: tp2 fp2 -> 4/6.
    assert f1_max([1, 1, 0, 0], [0.9, 0.6, 0.6, 0.1]) == pytest.approx(0.8)
    assert f1_max([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(1.0)
    assert math.isnan(f1_max([0, 0], [0.1, 0.2]))
    assert f1_max([1, 1], [0.1, 0.2]) == pytest.approx(1.0)


def test_aupro_perfect_map_is_one() -> None:
    masks = np.zeros((3, 32, 32), bool)
    masks[0, 4:10, 4:10] = True
    masks[0, 20:30, 15:18] = True
    masks[2, 12:16, 12:20] = True
    maps = masks.astype(np.float32)
    assert aupro(masks, maps) == pytest.approx(1.0)
    assert aupro(masks, maps * 0.7 + 0.1, fpr_limit=0.05) == pytest.approx(1.0)


def test_aupro_half_detected_two_regions() -> None:
    # Region A is scored above every normal pixel, region B below every normal pixel:
    # PRO is 0.5 from FPR=0 until FPR jumps to 1, so the normalised area is exactly 0.5.
    masks = np.zeros((1, 32, 32), bool)
    masks[0, 2:8, 2:8] = True  # region A (36 px)
    masks[0, 20:30, 20:30] = True  # region B (100 px): size must not matter, PRO averages regions
    maps = np.full((1, 32, 32), 0.5, np.float32)
    maps[0, 2:8, 2:8] = 1.0
    maps[0, 20:30, 20:30] = 0.0
    assert aupro(masks, maps) == pytest.approx(0.5)
    fpr, pro, thr = pro_curve(masks, maps)
    assert fpr[0] == 0 and pro[0] == 0 and np.isinf(thr[0])
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0)


def test_aupro_interpolates_at_limit() -> None:
    # One 2-px region: one pixel scored 1.0, the other 0.5. Ten normal pixels: four at 0.5, six at 0.
    # Curve by decreasing threshold: (0, 0) -> t=1: (0, .5) -> t=.5: (.4, 1) -> t=0: (1, 1).
    # Cut at FPR .3 on the segment (0, .5)-(.4, 1): PRO(.3) = .875; area/.3 = (.5 + .875) / 2.
    mask = np.zeros((1, 1, 12), bool)
    mask[0, 0, :2] = True
    maps = np.zeros((1, 1, 12), np.float32)
    maps[0, 0, 0] = 1.0
    maps[0, 0, 1] = 0.5
    maps[0, 0, 2:6] = 0.5
    expected = (0.5 + 0.875) / 2
    assert aupro(mask, maps, num_thresholds=3) == pytest.approx(expected)
    assert aupro(mask, maps, num_thresholds=201) == pytest.approx(expected)
    # Limit beyond the last jump: area = .4*(.5+1)/2 + (1-.4)*1 over [0, 1].
    assert aupro(mask, maps, fpr_limit=1.0) == pytest.approx(0.4 * 0.75 + 0.6)


def test_aupro_no_region_is_nan_and_2d_input() -> None:
    assert math.isnan(aupro(np.zeros((2, 8, 8), bool), np.random.default_rng(0).random((2, 8, 8))))
    m = np.zeros((16, 16), bool)
    m[3:6, 3:6] = True
    assert aupro(m, m.astype(float)) == pytest.approx(1.0)


def test_aupro_regions_are_8_connected() -> None:
    # Two diagonal blocks touching at a corner form ONE region under 8-connectivity, so detecting
    # only one of them gives PRO = its share of the pixels, not 0.5.
    masks = np.zeros((1, 16, 16), bool)
    masks[0, 2:4, 2:4] = True  # 4 px
    masks[0, 4:8, 4:8] = True  # 16 px, corner-touching
    maps = np.full((1, 16, 16), 0.5, np.float32)
    maps[0, 4:8, 4:8] = 1.0
    maps[0, 2:4, 2:4] = 0.0
    assert aupro(masks, maps) == pytest.approx(16 / 20)


def test_aupro_random_map_is_low() -> None:
    rng = np.random.default_rng(3)
    masks = np.zeros((40, 256, 256), bool)
    for i in range(0, 40, 2):
        y, x = rng.integers(20, 200, 2)
        masks[i, y : y + 30, x : x + 20] = True
    maps = rng.random(masks.shape).astype(np.float32)
    a = aupro(masks, maps)
    # A random map has PRO ~= FPR, so the normalised area is ~ fpr_limit / 2.
    assert a == pytest.approx(0.15, abs=0.02)


def test_threshold_at_percentile() -> None:
    s = np.arange(101, dtype=float)
    assert threshold_at_percentile(s, 99) == pytest.approx(99.0)
    assert threshold_at_percentile(s) == pytest.approx(99.0)
    assert threshold_at_percentile(s, 50) == pytest.approx(50.0)
    assert math.isnan(threshold_at_percentile(np.array([])))
    with pytest.raises(ValueError):
        threshold_at_percentile(s, 101)


def test_pro_curve_matches_per_threshold_loop() -> None:
    import cv2

    rng = np.random.default_rng(7)
    masks = np.zeros((3, 24, 24), bool)
    masks[0, 2:9, 3:7] = True
    masks[0, 15:20, 15:22] = True
    masks[2, 5:12, 10:14] = True
    maps = rng.random(masks.shape) * 0.7 + masks * rng.random(masks.shape) * 0.5
    fpr, pro, thr = pro_curve(masks, maps, num_thresholds=25)
    regions = []
    for m in masks:
        n, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        regions.append([lab == r for r in range(1, n)])
    for f, p, t in zip(fpr[1:], pro[1:], thr[1:]):
        pred = maps >= t
        assert f == pytest.approx(pred[~masks].mean())
        overlaps = [pred[i][r].mean() for i in range(3) for r in regions[i]]
        assert p == pytest.approx(np.mean(overlaps))
