"""Why is this hot? The nearest-reference lookup on real MR slices with the default backbone (EfficientNet-Lite2,
ImageNet weights): it returns the patch the memory bank actually matched (checked by brute force over the whole
bank), its distance is the bank map's value, and the reference box is where that entry's feature came from."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from medad_viewer.engine.adapt import AdaptSettings
from medad_viewer.engine.detector import AnomalyDetector, DetectorSettings
from medad_viewer.engine.pipeline import fit_detector
from medad_viewer.engine.explain import cell_box, explain_point, point_cell
from medad_viewer.engine.maps import cells_touching

FAST = AdaptSettings(max_steps=4, val_every=2, pool_size=16, batch_size=8, seed=0)
REFS = (6, 12, 18)  # normal slices of brain2 (its tumour is on slices 8-10)


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


from test_engine import effnet, mr  # noqa: E402,F401 - brain2 in [0, 1] with its labels; the default backbone


@pytest.fixture(scope="module")
def memory_det(mr, effnet):
    # A small bank, so the coreset drops most patches: the kept entries must still know where they came from.
    s = DetectorSettings(method="memory", input_size=128, modality="MR", bank_max_patches=400)
    return fit_detector([mr[0][z] for z in REFS], s, backbone=effnet)


@pytest.fixture(scope="module")
def adapted_det(mr, effnet):
    s = DetectorSettings(method="adapted", input_size=128, modality="MR", adapt=FAST)
    return fit_detector([mr[0][z] for z in REFS], s, backbone=effnet)


def hot_point(mr, det: AnomalyDetector) -> tuple[np.ndarray, int, int]:
    """The hottest point of the tumour's middle slice."""
    img = mr[0][9]
    m = det.score([img])[0].map
    r, c = np.unravel_index(int(np.argmax(m)), m.shape)
    return img, int(r), int(c)


def patch_rows(det: AnomalyDetector, prepared) -> torch.Tensor:
    """(g*g, C) the bank's rows of one prepared slice, recomputed here."""
    return det.bank._rows(det._patches(det._features([prepared]).seg))


def test_the_match_is_the_brute_force_nearest_entry_of_the_whole_bank(mr, memory_det):
    det = memory_det
    assert len(det.bank) == 400  # coreset-subsampled
    img, r, c = hot_point(mr, det)
    e = explain_point(det, img, r, c)
    assert e.inside_region and not e.missing
    p = det._prepare(img)
    patches = det._patches(det._features([p]).seg)
    g = patches.shape[-1]
    assert e.grid == g and e.cell == point_cell(r, c, img.shape, g)
    # Brute force, in float64, over every bank entry.
    q = F.normalize(patches[0, :, e.cell[0], e.cell[1]].double(), dim=0)
    d = 1.0 - det.bank.features.double() @ q
    assert int(torch.argmin(d)) == e.entry
    assert e.distance == pytest.approx(float(d.min()), abs=1e-6)
    # ... and it is the bank map's value at that cell, before smoothing and upsampling.
    where = cells_touching(torch.from_numpy(det.region_of(p)[None]), g, grow=1)
    assert e.distance == float(det.bank.score(patches, where=where)[0, e.cell[0], e.cell[1]])
    # The query box holds the point.
    y0, x0, y1, x1 = e.box
    assert y0 <= r < y1 and x0 <= c < x1
    # The map value is the one scoring gives there, the percentile the calibration's.
    scored = det.score([img])[0]
    assert e.map_value == pytest.approx(float(scored.map[r, c]), abs=1e-5)
    assert e.map_percentile == pytest.approx(float(det.calibration.pixel_percentile(scored.map[r, c])), abs=0.05)


def test_the_reference_box_is_where_the_matched_feature_came_from(mr, memory_det):
    det = memory_det
    img, _lab = mr
    q, hot_r, hot_c = hot_point(mr, det)
    seen_mirrored = set()
    for r, c in [(hot_r, hot_c), *((y, x) for y in range(60, 200, 24) for x in range(60, 200, 24))]:
        e = explain_point(det, q, r, c)
        if e.inside_region:
            check_reference_box(det, img, e)
            seen_mirrored.add(e.mirrored)
    assert seen_mirrored == {False, True}


def check_reference_box(det: AnomalyDetector, img: np.ndarray, e) -> None:
    assert e.reference is not None and 0 <= e.reference < len(REFS)
    ref = img[REFS[e.reference]]
    p = det._prepare(ref)
    if e.mirrored:
        p = det._mirrored(p)
    rows = patch_rows(det, p)
    g = e.grid
    flat = e.reference_cell[0] * g + e.reference_cell[1]
    entry = det.bank.features[e.entry].double()
    assert torch.allclose(rows[flat].double(), entry, atol=1e-4)
    # Of all the reference's cells, this one is the entry's own (the others differ).
    assert int(torch.argmax(rows.double() @ entry)) == flat
    # The box in the reference's pixels: the same patch seen from the reference itself is at distance ~0.
    y0, x0, y1, x1 = e.reference_box(ref.shape)
    assert 0 <= y0 < y1 <= ref.shape[0] and 0 <= x0 < x1 <= ref.shape[1]
    seen = ref[:, ::-1] if e.mirrored else ref
    w = ref.shape[1]
    cy, cx = int((y0 + y1) / 2), int((x0 + x1) / 2)
    if e.mirrored:
        cx = w - 1 - cx
    back = explain_point(det, np.ascontiguousarray(seen), cy, cx)
    assert back.cell == e.reference_cell
    assert back.distance < 1e-4


def test_mirrored_matches_map_back_to_the_reference(mr, memory_det):
    """Every bank entry's (owner, cell) holds the feature of that cell of that owner, mirrored copies included."""
    det = memory_det
    img, _lab = mr
    assert det.bank.cells is not None and len(det.bank.cells) == len(det.bank)
    owners = det.bank.owners.tolist()
    assert set(owners) == set(range(2 * len(REFS)))  # originals and mirrored copies
    for owner in sorted(set(owners)):
        k, mirrored = det.bank_owner(owner)
        assert mirrored == (owner >= len(REFS)) and k == owner % len(REFS)
        p = det._prepare(img[REFS[k]])
        rows = patch_rows(det, det._mirrored(p) if mirrored else p)
        sel = det.bank.owners == owner
        assert torch.allclose(rows[det.bank.cells[sel]], det.bank.features[sel], atol=1e-4)


def test_geometry_of_cells_on_a_non_square_slice():
    shape, g = (200, 300), 16
    for r, c in [(0, 0), (199, 299), (100, 17), (3, 250)]:
        y0, x0, y1, x1 = cell_box(point_cell(r, c, shape, g), shape, g)
        assert y0 <= r < y1 and x0 <= c < x1
        # The mirrored copy's cell of the mirrored pixel covers the pixel itself.
        mcell = point_cell(r, shape[1] - 1 - c, shape, g)
        y0, x0, y1, x1 = cell_box(mcell, shape, g, mirrored=True)
        assert y0 <= r < y1 and x0 <= c + 0.5 <= x1


def test_adapted_run_shows_the_head_beside_the_bank(mr, adapted_det):
    det = adapted_det
    img, r, c = hot_point(mr, det)
    e = explain_point(det, img, r, c)
    assert [x.name for x in e.components] == ["bank", "head"]
    assert sum(x.weight for x in e.components) == pytest.approx(1.0)
    assert sum(x.contribution for x in e.components) == pytest.approx(e.map_value, abs=1e-4)
    assert e.map_value == pytest.approx(float(det.score([img])[0].map[r, c]), abs=1e-5)
    # The bank search runs on the adapted features, like scoring's.
    p = det._prepare(img)
    patches = det._patches(det._features([p]).seg)
    q = F.normalize(patches[0, :, e.cell[0], e.cell[1]].double(), dim=0)
    d = 1.0 - det.bank.features.double() @ q
    assert int(torch.argmin(d)) == e.entry and e.distance == pytest.approx(float(d.min()), abs=1e-6)


def test_outside_the_scored_region_says_so(mr, memory_det):
    img, _r, _c = hot_point(mr, memory_det)
    e = explain_point(memory_det, img, 0, 0)  # air in the corner
    assert not e.inside_region and "outside the scored region" in e.missing


def test_the_index_survives_save_and_load_and_old_detectors_say_not_available(tmp_path, mr, memory_det, effnet):
    det = memory_det
    img, r, c = hot_point(mr, det)
    before = explain_point(det, img, r, c)
    det.save(tmp_path / "det")
    again = explain_point(AnomalyDetector.load(tmp_path / "det", backbone=effnet), img, r, c)
    assert (again.entry, again.reference, again.mirrored, again.reference_cell) == \
        (before.entry, before.reference, before.mirrored, before.reference_cell)
    # A detector saved before the cells were kept: it loads, scores the same and says what it cannot show.
    st = tmp_path / "det.safetensors"
    tensors = load_file(str(st))
    del tensors["bank.cells"]
    save_file(tensors, str(st))
    old = AnomalyDetector.load(tmp_path / "det", backbone=effnet)
    assert old.bank.cells is None
    e = explain_point(old, img, r, c)
    assert e.entry == before.entry and e.reference == before.reference and e.reference_cell is None
    assert e.reference_box(img.shape) is None and "not kept" in e.missing
    np.testing.assert_array_equal(old.score([img])[0].map, det.score([img])[0].map)


def test_a_volume_is_scored_with_one_axis_angle_and_why_explains_with_it(mr, memory_det):
    """The slices of a volume share the symmetry axis's angle (the median of 9 slices' own, over 10-90 % of the
    volume), score_series scores them with it, and the Why panel's explanation gives the scored map value."""
    from dataclasses import replace

    from medad_viewer.engine.series_scores import score_series, volume_midline_angle
    from medad_viewer.engine.symmetry import midline
    from medad_viewer.io.series import Series

    det, vol = memory_det, mr[0]
    series = Series.from_array(vol, uid="brain2", modality="MR", description="t", source="t", is_volume=True)
    same = lambda x: x  # noqa: E731 - mr is in [0, 1] already
    angle = volume_midline_angle(det, series, same)
    n = vol.shape[0]
    picks = np.unique(np.linspace(0.1 * (n - 1), 0.9 * (n - 1), 9).round().astype(int))
    found = [midline(p.image, p.body) for p in (det._prepare(vol[i]) for i in picks)]
    assert angle == pytest.approx(float(np.median([a.angle for a in found if a is not None])))
    # the tumour's slice finds another angle of its own: the shared one changes its map
    own = midline(det._prepare(vol[9]).image, det._prepare(vol[9]).body)
    assert abs(own.angle - angle) > 0.5
    out = score_series(det, series, [9], normalizer=same)
    assert out.midline_angle == angle
    want = det.score([vol[9]], midline_angle=angle)[0].map
    np.testing.assert_array_equal(out.results[9].map, want)
    assert not np.array_equal(det.score([vol[9]])[0].map, want)
    r, c = np.unravel_index(int(np.argmax(want)), want.shape)
    e = explain_point(det, vol[9], int(r), int(c), angle)
    assert e.map_value == pytest.approx(float(want[r, c]), abs=1e-5)
    # not a volume (a folder of images), or the setting off: every slice its own angle
    flat = Series.from_array(vol, uid="b", modality="MR", description="t", source="t", is_volume=False)
    assert volume_midline_angle(det, flat, same) is None
    off = det.settings
    try:
        det.settings = replace(off, volume_midline=False)
        assert volume_midline_angle(det, series, same) is None
    finally:
        det.settings = off
