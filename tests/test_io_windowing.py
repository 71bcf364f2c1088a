"""Windowing: the linear window's end points, presets per modality, automatic windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medad_viewer.io import (
    CT_PRESETS,
    Series,
    WindowPreset,
    apply_window,
    auto_window,
    default_window,
    load_study,
    presets_for,
    to_uint8,
)


def test_apply_window_end_points() -> None:
    c, w = 40.0, 400.0
    x = np.array([c - w / 2, c, c + w / 2, -5000, 5000], dtype=np.int16)
    out = apply_window(x, c, w)
    assert out.dtype == np.float32
    assert out.tolist() == pytest.approx([0.0, 0.5, 1.0, 0.0, 1.0])
    assert x[3] == -5000  # input untouched


def test_apply_window_zero_width_is_a_threshold() -> None:
    out = apply_window(np.array([9.0, 10.0, 11.0]), 10.0, 0.0)
    assert out[0] == 0.0 and out[2] == 1.0


def test_to_uint8() -> None:
    out = to_uint8(np.array([[-160.0, 40.0, 240.0]]), 40, 400)
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 128, 255]]


def test_ct_presets_and_file_window() -> None:
    ct = Series.from_array(np.zeros((2, 4, 4), np.int16), uid="x", modality="CT", file_window=(50.0, 350.0))
    names = [p.name for p in presets_for(ct)]
    assert names == ["Brain", "Soft tissue", "Lung", "Liver", "Bone", "File"]
    assert presets_for(ct)[-1] == WindowPreset("File", 50.0, 350.0)
    assert default_window(ct) == WindowPreset("Soft tissue", 40, 400)
    assert CT_PRESETS[2] == WindowPreset("Lung", -600, 1500)


def test_auto_window_percentiles_and_mask() -> None:
    values = np.arange(1001, dtype=np.float32)
    w = auto_window(values)
    assert w.name == "Auto"
    assert (w.center - w.width / 2, w.center + w.width / 2) == pytest.approx((10.0, 990.0))
    masked = auto_window(values, mask=values >= 500, low_pct=0, high_pct=100)
    assert masked.center - masked.width / 2 == pytest.approx(500.0)
    assert auto_window(np.zeros((3, 3))).width > 0


def test_mr_auto_window_ignores_background(sample_data: Path) -> None:
    (mr,) = load_study(sample_data / "mr-brain" / "brain1_image.nrrd").series
    presets = presets_for(mr)
    assert [p.name for p in presets] == ["Auto"]
    auto = presets[0]
    assert default_window(mr) == auto
    everything = auto_window(mr.volume())
    # With background zeros counted the window would start at 0; without, it starts inside tissue.
    assert everything.center - everything.width / 2 == pytest.approx(0.0)
    assert auto.center - auto.width / 2 > 0
    tissue = mr.volume()[mr.volume() > 0]
    assert auto.center + auto.width / 2 <= float(tissue.max())


def test_non_ct_file_window_is_default() -> None:
    xr = Series.from_array(np.arange(16, dtype=np.int16).reshape(4, 4), uid="y", modality="CR",
                           file_window=(8.0, 10.0))
    assert [p.name for p in presets_for(xr)] == ["Auto", "File"]
    assert default_window(xr) == WindowPreset("File", 8.0, 10.0)


def test_letterbox_fits_centres_and_pads():
    import cv2

    from medad_viewer.io.imaging import fit_size, letterbox

    assert fit_size(100, 50, 64) == (64, 32) and fit_size(1, 1000, 64) == (1, 64)
    img = np.full((100, 50), 200, np.uint8)
    box = letterbox(img, 64)
    assert box.shape == (64, 64) and box.dtype == np.uint8
    assert (box[:, 16:48] == 200).all() and not box[:, :16].any() and not box[:, 48:].any()
    mask = np.zeros((50, 100), np.uint8)
    mask[20:30, 40:60] = 1
    small = letterbox(mask, 20, cv2.INTER_NEAREST)  # labels stay labels
    assert set(np.unique(small)) == {0, 1} and not small[:5].any() and not small[15:].any()
    assert letterbox(np.ones((4, 8, 3), np.uint8), 16).shape == (16, 16, 3)
