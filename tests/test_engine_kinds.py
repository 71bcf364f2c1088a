"""Issue 19: cross-sections and radiographs are told apart and scored each their own way; the slice's own mirror,
the FLAIR intensity term and the guided filter do what they are for. On the bundled sample data."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medad_viewer.engine.backbones import load_backbone
from medad_viewer.engine.detector import (FLAIR_HYPERINTENSITY_GATE, AnomalyDetector,
                                          DetectorSettings, resolved_settings)
from medad_viewer.engine.evaluate import read_image01
from medad_viewer.engine.maps import guided_within
from medad_viewer.engine.memory_bank import MemoryBank
from medad_viewer.engine.pipeline import fit_detector
from medad_viewer.engine.preprocess import image_kind, looks_like_radiograph, normalizer_for_series, prepare
from medad_viewer.engine.symmetry import midline, reflect
from medad_viewer.io import load_study, series_sequence


@pytest.fixture(scope="module")
def effnet():
    return load_backbone("efficientnet-lite2")


@pytest.fixture(scope="module")
def head(sample_data):
    """brain2 (whole head, T1-like) in [0, 1], the viewer's orientation, and its tumour labels."""
    img = sitk.GetArrayFromImage(sitk.DICOMOrient(
        sitk.ReadImage(str(sample_data / "mr-brain" / "brain2_image.nrrd")), "LPS")).astype(np.float32)
    lab = sitk.GetArrayFromImage(sitk.DICOMOrient(
        sitk.ReadImage(str(sample_data / "mr-brain" / "brain2_label.nrrd")), "LPS")) > 0
    lo, hi = np.percentile(img[img > img.min()], [1, 99.5])
    return np.clip((img - lo) / (hi - lo), 0, 1), lab


def _xrays(sample_data):
    return [read_image01(p) for p in sorted((sample_data / "xray").glob("*.png"))]


def _tight(img: np.ndarray) -> np.ndarray:
    """Cropped to the head's bounding box, as web JPGs often are: the head meets all four borders."""
    ys, xs = np.nonzero(img > 0.08)
    return np.ascontiguousarray(img[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1])


# ------------------------------------------------------------------------------------------------ image kind
def test_chest_xrays_look_like_radiographs_and_heads_do_not_even_cropped_tight(sample_data, head):
    xr = [prepare(x, 256) for x in _xrays(sample_data)]
    assert sum(looks_like_radiograph(p) for p in xr) >= 3  # 3 of the 4 sample X-rays on their own
    assert image_kind("OT", xr) == "radiograph"  # the study: half of its references or more
    img, _ = head
    slices = [prepare(img[z], 256) for z in range(8, 20)] + [prepare(_tight(img[z]), 256) for z in range(8, 20)]
    assert not any(looks_like_radiograph(p) for p in slices)
    assert image_kind("OT", slices) == "section"


def test_the_modality_decides_when_it_says(sample_data):
    xr = [prepare(x, 256) for x in _xrays(sample_data)]
    assert image_kind("CT", xr) == "section" and image_kind("MR", xr) == "section"
    assert image_kind("DX", []) == "radiograph" and image_kind("CR", []) == "radiograph"
    assert image_kind("OT", []) == "section"


def test_settings_resolve_by_kind_and_sequence():
    s = DetectorSettings()
    assert s.self_mirror == "auto" and s.image_score == "auto" and s.intensity_weight is None
    sec = resolved_settings(s, "section")
    assert (sec.self_mirror, sec.image_score, sec.intensity_weight) == ("geo_gated", "local_max", 0.0)
    rad = resolved_settings(s, "radiograph")
    assert (rad.self_mirror, rad.image_score) == ("off", "mean")
    assert sec.hyperintensity_gate == 0.0
    flair = resolved_settings(replace(s, modality="MR", sequence="FLAIR"), "section")
    assert flair.intensity_weight == 0.0  # the gate does what the intensity term did, better (README)
    assert flair.hyperintensity_gate == FLAIR_HYPERINTENSITY_GATE > 0
    ct = resolved_settings(replace(s, modality="CT", sequence="FLAIR"), "section")
    assert ct.intensity_weight == 0.0 and ct.hyperintensity_gate == 0.0
    assert resolved_settings(replace(s, modality="MR", sequence="T1"), "section").hyperintensity_gate == 0.0
    # what the user set stays set
    mine = resolved_settings(replace(s, self_mirror="off", image_score="max", intensity_weight=1.5), "section")
    assert (mine.self_mirror, mine.image_score, mine.intensity_weight) == ("off", "max", 1.5)


def test_a_detector_fitted_on_xrays_scores_them_as_radiographs_and_keeps_it(sample_data, effnet, tmp_path):
    xr = _xrays(sample_data)
    det = fit_detector(xr[:3], DetectorSettings(input_size=128), backbone=effnet)
    assert det.kind == "radiograph" and det.settings.self_mirror == "off" and det.settings.image_score == "mean"
    p = det._prepare(xr[3])
    assert np.array_equal(det.region_of(p), p.body)  # the body, never a skull's inside
    out = det.score([xr[3]])[0]
    assert np.isfinite(out.map).all() and 0 <= out.percentile <= 100
    det.save(tmp_path / "xr")
    again = AnomalyDetector.load(tmp_path / "xr", backbone=effnet)
    assert again.kind == "radiograph" and again.describe()["kind"] == "radiograph"
    np.testing.assert_allclose(again.score([xr[3]])[0].map, out.map, atol=1e-5)


def test_series_sequence_from_description_or_file_name(sample_data, tmp_path):
    ct = load_study(str(sample_data / "ct-nifti" / "example_ct_sm.nii.gz")).series[0]
    assert series_sequence(ct) is None  # CT has no MR sequence
    mr = load_study(str(sample_data / "mr-brain" / "brain1_image.nrrd")).series[0]
    assert series_sequence(mr) is None
    flair = tmp_path / "sub-01_FLAIR.nrrd"
    flair.write_bytes((sample_data / "mr-brain" / "brain1_image.nrrd").read_bytes())
    s = load_study(str(flair)).series[0]
    assert s.modality == "MR" and series_sequence(s) == "FLAIR"
    for desc, want in (("AX T2 FLAIR", "FLAIR"), ("t2_tirm_tra_dark-fluid", "FLAIR"), ("T1 MPRAGE post", None)):
        assert series_sequence(replace(mr, description=desc, source="/x/1.dcm")) == want


# ------------------------------------------------------------------------------------------------ the mirror
def test_midline_of_a_head_is_near_its_centre_and_reflection_is_an_involution(head):
    img, _ = head
    p = prepare(img[14], 256)
    axis = midline(p.image, p.body)
    assert axis is not None and abs(axis.angle) < 10 and axis.quality > 0.5
    xs = np.nonzero(p.body.any(0))[0]
    assert abs(axis.cx - (xs.min() + xs.max()) / 2) < 12  # through the head's middle
    back = reflect(reflect(p.image, axis), axis)
    inner = cv2.erode(p.body.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    assert np.abs(back - p.image)[inner].mean() < 0.02


def test_reflection_matrix_fixes_its_axis_and_is_its_own_inverse():
    from medad_viewer.engine.symmetry import Midline, reflection_matrix
    for axis in (Midline(30.0, 40.0, 0.0, 1.0), Midline(12.5, 80.0, 17.0, 1.0), Midline(64.0, 3.0, -9.5, 1.0)):
        m = np.vstack([reflection_matrix(axis), [0, 0, 1]])
        np.testing.assert_allclose(m @ m, np.eye(3), atol=1e-12)
        t = np.deg2rad(axis.angle)
        for step in (-30.0, 0.0, 25.0):  # points along the axis stay where they are
            pt = np.array([axis.cx + step * np.sin(t), axis.cy + step * np.cos(t), 1.0])
            np.testing.assert_allclose(m @ pt, pt, atol=1e-9)
        off = np.array([axis.cx + 10 * np.cos(t), axis.cy - 10 * np.sin(t), 1.0])  # 10 px off the axis, across it
        np.testing.assert_allclose(m @ off, [axis.cx - 10 * np.cos(t), axis.cy + 10 * np.sin(t), 1.0], atol=1e-9)
        half = reflection_matrix(axis, scale=0.5)
        np.testing.assert_allclose(half[:, :2], m[:2, :2]) and np.testing.assert_allclose(half[:, 2], m[:2, 2] / 2)


def test_midline_of_a_symmetric_shape_is_its_centre_to_a_pixel():
    """A left-right symmetric shape centred at a known column (pixel centres at integers, as cv2): the axis is found
    there to within a pixel, not shifted by the work copy's half pixel (it was 2 px off: the mirror 4 px)."""
    yy, xx = np.mgrid[:256, :256]
    for cx in (100.0, 131.5):
        body = ((xx - cx) / 60.0) ** 2 + ((yy - 128) / 90.0) ** 2 < 1
        img = np.where(body, 0.5 + 0.3 * np.exp(-((yy - 100) / 20.0) ** 2), 0).astype(np.float32)
        img += np.where(body & (np.abs(xx - cx) > 20) & (np.abs(xx - cx) < 30) & (yy > 150), 0.3, 0).astype(np.float32)
        axis = midline(img, body)
        assert abs(axis.angle) < 0.5 and abs(axis.cx - cx) < 1.0, (cx, axis)
        back = reflect(img, axis)
        assert np.abs(back - img)[body].mean() < 0.01


def test_midline_follows_a_tilted_head(head):
    """The head rotated about its centre: the axis turns with it (within the search's 1.6-degree last step) and
    still passes through the middle."""
    img, _ = head
    p = prepare(img[10], 256)
    axis = midline(p.image, p.body)
    ys, xs = np.nonzero(p.body)
    for tilt in (8.0, -12.0):
        rot = cv2.getRotationMatrix2D((float(xs.mean()), float(ys.mean())), tilt, 1.0)
        tilted = cv2.warpAffine(p.image, rot, (256, 256), flags=cv2.INTER_LINEAR)
        body = cv2.warpAffine(p.body.astype(np.float32), rot, (256, 256)) > 0.5
        again = midline(tilted, body)
        assert again is not None and abs(again.angle - axis.angle - tilt) < 1.6, (tilt, axis, again)
        assert again.quality > 0.5
        # the rotation centre lies on the axis: its distance across the axis is small
        t = np.deg2rad(again.angle)
        across = (xs.mean() - again.cx) * np.cos(t) - (ys.mean() - again.cy) * np.sin(t)
        assert abs(across) < 4, across


def test_neighbourhood_distance_is_the_best_match_within_the_radius():
    """Against a brute-force loop: 1 - the best cosine similarity among the other map's cells within `radius`
    (off the grid: similarity 0), with the intensity term."""
    from medad_viewer.engine.memory_bank import neighbourhood_distance
    g = torch.Generator().manual_seed(1)
    q, o = torch.randn(2, 5, 6, 6, generator=g), torch.randn(2, 5, 6, 6, generator=g)
    for radius, w in ((1, 0.0), (2, 0.0), (1, 3.0)):
        got = neighbourhood_distance(q, o, radius, w)
        want = torch.zeros(2, 6, 6)
        for b in range(2):
            for y in range(6):
                for x in range(6):
                    best = -np.inf
                    for dy in range(-radius, radius + 1):
                        for dx in range(-radius, radius + 1):
                            yy, xx = y + dy, x + dx
                            if 0 <= yy < 6 and 0 <= xx < 6:
                                feats = q[b, :-1, y, x] if w else q[b, :, y, x]
                                other = o[b, :-1, yy, xx] if w else o[b, :, yy, xx]
                                sim = float(torch.nn.functional.cosine_similarity(feats, other, dim=0))
                                oi = float(o[b, -1, yy, xx])
                            else:
                                sim, oi = 0.0, 0.0
                            if w:
                                sim -= 0.5 * w * w * (oi - float(q[b, -1, y, x])) ** 2
                            best = max(best, sim)
                    want[b, y, x] = max(1.0 - best, 0.0)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_memory_bank_scores_the_same_in_any_block_size():
    from medad_viewer.engine.memory_bank import MemoryBank
    g = torch.Generator().manual_seed(2)
    bank = MemoryBank().fit(torch.randn(3, 8, 10, 10, generator=g), torch.arange(3))
    test = torch.randn(2, 8, 10, 10, generator=g)
    where = torch.rand(2, 10, 10, generator=g) > 0.3
    ref = bank.score(test, where=where, chunk=10_000)
    for chunk in (None, 7, 64):
        torch.testing.assert_close(bank.score(test, where=where, chunk=chunk), ref)
    assert (ref[~where] == 0).all() and (ref[where] > 0).all()


def test_the_mirror_lights_a_one_sided_change_that_the_references_explain(head, effnet):
    """A bright blob on one side, where the references have bright tissue elsewhere: the bank alone finds a close
    match (cosine is blind to where), the slice's own mirror does not (its other side is normal)."""
    img, lab = head
    normal = [z for z in range(6, 20) if not lab[z].any()]
    refs = [img[z] for z in normal[:4]]
    target = img[normal[5]].copy()
    yy, xx = np.mgrid[:256, :256]
    blob = (yy - 120) ** 2 + (xx - 90) ** 2 < 12 ** 2
    target[blob] = np.clip(target[blob] + 0.35, 0, 1)
    maps = {}
    for how, mirror_pass in (("off", "image"), ("geo_gated", "image"), ("geo_gated", "features")):
        det = fit_detector(refs, DetectorSettings(input_size=128, modality="MR", self_mirror=how,
                                                  mirror_pass=mirror_pass), backbone=effnet)
        maps[how if mirror_pass == "image" else "features"] = det.score([target])[0].map
    ring = cv2.dilate(blob.astype(np.uint8), np.ones((41, 41), np.uint8)).astype(bool) & ~cv2.dilate(
        blob.astype(np.uint8), np.ones((21, 21), np.uint8)).astype(bool)
    lift = {h: float(m[blob].mean() - m[ring].mean()) for h, m in maps.items()}
    assert lift["geo_gated"] > lift["off"]  # the blob stands out of its surroundings more with the mirror
    assert lift["geo_gated"] > 0.5
    assert lift["features"] > lift["off"] and lift["features"] > 0.5  # and with the mirror made from the features


def test_flip_map_recovers_exchanged_channels():
    """Synthetic features whose flipped copy has channels exchanged (as a CNN's oriented filters are): the fitted
    convolution's centre is that exchange and its other taps are zero, and reflect_patches with it gives the
    flipped copy's features."""
    from medad_viewer.engine.detector import fit_flip_map, reflect_patches
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 8, 8, generator=g)
    perm = torch.tensor([1, 0, 3, 2, 4, 5])
    flipped = torch.flip(x, dims=[-1])[:, perm]  # the flipped slice's features: flipped, channels exchanged
    keep = torch.ones(3, 8, 8, dtype=torch.bool)
    w, b = fit_flip_map(x, flipped, keep, intensity=False, ridge=1e-4)
    assert w.shape == (6, 6, 3, 3)
    assert torch.allclose(w[:, :, 1, 1], torch.eye(6)[perm], atol=5e-3) and b.abs().max() < 5e-3
    w[:, :, 1, 1] = 0
    assert w.abs().max() < 5e-3
    # an axis through the middle of the image: its mirror image is the plain flip
    from medad_viewer.engine.symmetry import Midline
    w, b = fit_flip_map(x, flipped, keep, intensity=False, ridge=1e-4)
    out = reflect_patches(x, [Midline(31.5, 31.5, 0.0, 1.0)] * 3, 64, (w, b), intensity=False)
    assert torch.allclose(out, flipped, atol=2e-2)
    assert torch.equal(reflect_patches(x, [None] * 3, 64, (w, b), intensity=False), x)  # no axis: itself


def test_flip_map_of_the_backbone_predicts_a_held_out_slice_from_each_cells_neighbourhood(head, effnet):
    """Real features: fitted on 4 slices and their flipped copies, the map predicts a fifth slice's flipped features
    far better than reflecting its features alone, and better from each cell's 3 x 3 neighbourhood than from the
    cell alone."""
    from medad_viewer.engine.detector import fit_flip_map
    img, lab = head
    normal = [z for z in range(6, 20) if not lab[z].any()]
    det = fit_detector([img[z] for z in normal[:4]], DetectorSettings(input_size=128, modality="MR",
                                                                      mirror_pass="features"), backbone=effnet)
    assert det.flip_map is not None and det.flip_map[0].shape[-1] == 3

    def patches(slices):
        with torch.no_grad():
            return det._patches(det._features(slices).seg, slices)

    refs = [det._prepare(img[z]) for z in normal[:4]]
    pr, qr = patches(refs), patches([det._mirrored(p) for p in refs])
    keep = torch.from_numpy(np.stack([p.region for p in refs]))
    keep = torch.nn.functional.interpolate(keep[:, None].float(), size=pr.shape[-1])[:, 0] > 0.5
    p = det._prepare(img[normal[5]])
    pa, pb = patches([p]), patches([det._mirrored(p)])
    target = torch.flip(pb, dims=[-1])[0]
    inside = torch.from_numpy(p.region)
    inside = torch.nn.functional.interpolate(inside[None, None].float(), size=pa.shape[-1])[0, 0] > 0.5

    def error(w, b):
        mapped = torch.nn.functional.conv2d(pa, w, b, padding=w.shape[-1] // 2)[0]
        return float((mapped - target)[:, inside].norm(dim=0).mean())

    err_plain = float((pa[0] - target)[:, inside].norm(dim=0).mean())
    err3 = error(*det.flip_map)
    err1 = error(*fit_flip_map(pr, qr, keep, intensity=False, kernel=1))
    assert err3 < 0.5 * err_plain, (err3, err_plain)
    assert err3 < 0.85 * err1, (err3, err1)


def test_each_reference_is_calibrated_with_a_flip_map_fitted_without_it(head, effnet):
    """As the bank hides a reference's copies from its calibration, the mirror of a calibration slice is made by a
    flip map fitted on the other references: the map fitted on it would predict its mirror too well, and the
    normal scale would come out too low (normal slices flagged too often)."""
    from medad_viewer.engine.jobs import CancelToken
    img, lab = head
    normal = [z for z in range(6, 20) if not lab[z].any()]
    settings = DetectorSettings(input_size=128, modality="MR")
    assert settings.mirror_pass == "features"  # the default
    det = fit_detector([img[z] for z in normal[:4]], settings, backbone=effnet)
    loo = det.calibration_flip_maps
    assert loo is not None and len(loo) == 4
    assert all(not torch.allclose(w, det.flip_map[0]) for w, _ in loo)
    scale = det.component_scale["bank"]
    det.calibration_flip_maps = None  # the same references calibrated with the map that saw them
    det._calibrate([det._prepare(img[z]) for z in normal[:4]] + [det._mirrored(det._prepare(img[z]))
                                                                  for z in normal[:4]], 4, CancelToken())
    med, spread = det.component_scale["bank"]
    # the normal pixels' median and 99th percentile: both higher with the maps that did not see the slice
    assert scale[0] > med * 1.03 and scale[0] + scale[1] > med + spread, (scale, (med, spread))
    one = fit_detector([img[normal[0]]], settings, backbone=effnet)
    assert one.flip_map is not None and one.calibration_flip_maps is None  # nothing to leave out


def test_a_saved_detector_keeps_its_flip_map(head, effnet, tmp_path):
    img, lab = head
    normal = [z for z in range(6, 20) if not lab[z].any()]
    det = fit_detector([img[z] for z in normal[:4]], DetectorSettings(input_size=128, modality="MR",
                                                                      mirror_pass="features"), backbone=effnet)
    target = img[max(range(img.shape[0]), key=lambda z: lab[z].sum())]
    det.save(tmp_path / "d")
    again = AnomalyDetector.load(tmp_path / "d", backbone=effnet)
    assert again.flip_map is not None and torch.equal(again.flip_map[0], det.flip_map[0])
    np.testing.assert_allclose(again.score([target])[0].map, det.score([target])[0].map, atol=1e-5)


# ------------------------------------------------------------------------------------------ intensity, guided
def test_intensity_term_separates_patches_that_differ_only_in_brightness():
    g = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(2, 16, 4, 4, generator=g), dim=1)
    bank_in = torch.cat([feats[:1], torch.full((1, 1, 4, 4), 0.2)], 1)  # the normal patch, dark
    query = torch.cat([feats[:1], torch.full((1, 1, 4, 4), 0.8)], 1)  # the same texture, bright
    d = {}
    for w in (0.0, 4.0):
        bank = MemoryBank("cosine", 1000, w)
        bank.fit(bank_in if w else bank_in[:, :-1], torch.zeros(1, dtype=torch.long))
        d[w] = float(bank.score(query if w else query[:, :-1]).max())
    assert d[0.0] < 1e-4  # cosine alone: a perfect match
    assert d[4.0] == pytest.approx(0.5 * 4.0 ** 2 * 0.6 ** 2, rel=1e-3)  # (w^2 / 2) x (0.8 - 0.2)^2


def test_guided_filter_follows_the_slice_edges_inside_the_region():
    """A blurred map of a bright square spills around it; refined with the square's image as guide (radius 8, the
    default at 256 px), the spill into a 4-pixel band around the square halves."""
    guide = np.zeros((1, 64, 64), np.float32)
    guide[0, 20:40, 20:40] = 1.0  # a bright square: the "lesion"
    coarse = cv2.GaussianBlur(guide[0], (0, 0), 3)[None]  # a blurred map of it, spilling out
    region = np.zeros((1, 64, 64), bool)
    region[0, 5:60, 5:60] = True
    out = guided_within(coarse, guide, region, radius=8, eps=1e-3)
    sq = guide[0] > 0
    band = cv2.dilate(sq.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~sq
    spill = {name: float(m[0][band].mean() / m[0][sq].mean()) for name, m in (("blur", coarse), ("guided", out))}
    assert spill["guided"] < 0.6 * spill["blur"], spill
    assert out[0, ~region[0]].max() == 0.0
    assert out[0][region[0]].min() >= coarse[0][region[0]].min() - 1e-6  # no undershoot below the map's range
    assert out[0][region[0]].max() <= coarse[0][region[0]].max() + 1e-6


def test_why_explains_the_mirror_beside_the_bank_match(head, effnet):
    """The Why panel's numbers are the ones scoring used: with the mirror on, the bank's distance, the mirror's,
    and the two joined (geometric mean), which is what is compared with the normal range."""
    from medad_viewer.engine.explain import explain_point

    img, lab = head
    normal = [z for z in range(6, 20) if not lab[z].any()]
    det = fit_detector([img[z] for z in normal[:4]], DetectorSettings(input_size=128, modality="MR"),
                       backbone=effnet)
    assert det.settings.self_mirror == "geo_gated"
    tumour = max(range(img.shape[0]), key=lambda z: lab[z].sum())
    ys, xs = np.nonzero(lab[tumour])
    e = explain_point(det, img[tumour], int(ys.mean()), int(xs.mean()))
    assert e.mirror_distance is not None and e.joined_distance is not None
    assert e.joined_distance == pytest.approx(np.sqrt(max(e.distance, 0) * max(e.mirror_distance, 0)), rel=1e-4)
    plain = fit_detector([img[z] for z in normal[:4]], DetectorSettings(input_size=128, modality="MR",
                                                                       self_mirror="off"), backbone=effnet)
    e0 = explain_point(plain, img[tumour], int(ys.mean()), int(xs.mean()))
    assert e0.mirror_distance is None and e0.joined_distance is None


def test_hyperintensity_gate_keeps_bright_pixels_and_dims_the_rest_of_the_region():
    from medad_viewer.engine.maps import hyperintensity_gate

    rng = np.random.default_rng(0)
    img = np.full((64, 64), 0.4, np.float32) + rng.normal(0, 0.02, (64, 64)).astype(np.float32)
    img[20:32, 20:32] = 0.9  # a hyperintense lesion
    img[40:50, 40:50] = 0.1  # dark (CSF)
    region = np.zeros((64, 64), bool)
    region[4:60, 4:60] = True
    g = hyperintensity_gate(img, region, full_at=2.0, floor=0.25)
    assert g[24:28, 24:28].min() == pytest.approx(1.0)
    assert g[43:47, 43:47].max() == pytest.approx(0.25)  # darker than the median: the floor, never below
    assert 0.25 <= float(np.median(g[region])) < 0.6  # the typical tissue keeps little
    assert np.all(hyperintensity_gate(img, np.zeros_like(region), 2.0, 0.25) == 1.0)  # no region: unchanged


def test_a_flair_series_keeps_map_values_where_the_slice_is_bright(head, effnet):
    """On a FLAIR series each component map is the ungated one times the gate, fitted and calibrated so; the Why
    panel reports the share kept, and its map value is still the one scoring gives."""
    from medad_viewer.engine.explain import explain_point

    img, lab = head
    normal = [z for z in range(6, 20) if not lab[z].any()]
    refs = [img[z] for z in normal[:4]]
    on = fit_detector(refs, DetectorSettings(input_size=128, modality="MR", sequence="FLAIR"), backbone=effnet)
    off = fit_detector(refs, DetectorSettings(input_size=128, modality="MR", sequence="FLAIR",
                                              hyperintensity_gate=0.0), backbone=effnet)
    assert on.settings.hyperintensity_gate == FLAIR_HYPERINTENSITY_GATE and off.settings.hyperintensity_gate == 0
    tumour = max(range(img.shape[0]), key=lambda z: lab[z].sum())
    p = on._prepare(img[tumour])
    regions = on.region_of(p)[None]
    gate = on.hyperintensity([p], regions)
    assert gate.min() >= on.settings.hyperintensity_floor and gate.max() == pytest.approx(1.0)
    np.testing.assert_allclose(on._component_maps([p], regions)["bank"],
                               off._component_maps([p], regions)["bank"] * gate, rtol=1e-4, atol=1e-6)
    assert on.component_scale["bank"] != off.component_scale["bank"]  # calibrated on gated maps too
    from medad_viewer.engine.preprocess import restore
    on_slice = restore(gate[0], p)  # back on the slice's own pixel grid, as explain_point takes points
    inside = restore(regions[0].astype(np.float32), p) > 0.99
    darks = np.argwhere(inside & (on_slice < 0.3))
    dark = darks[len(darks) // 2]
    e = explain_point(on, img[tumour], int(dark[0]), int(dark[1]))
    assert e.brightness_kept is not None and e.brightness_kept < 0.3
    assert e.map_value == pytest.approx(float(on.score([img[tumour]])[0].map[dark[0], dark[1]]), abs=1e-5)
    assert explain_point(off, img[tumour], int(dark[0]), int(dark[1])).brightness_kept is None


# ------------------------------------------------------------------------------------------ through the slices
class _ScriptedDetector:
    """Stands in for a fitted detector in score_series: slice i's image score is scores[i] (the map carries i),
    its percentile the score itself."""

    kind = "section"
    bank = None  # no slice's own mirror: no volume axis to find

    def __init__(self, scores, through_plane="auto", references=()):
        from medad_viewer.engine.detector import pixels_hash
        self.scores = scores
        self.settings = DetectorSettings(through_plane=through_plane)
        self.reference_hashes = [pixels_hash(np.full((4, 4), i / 100, np.float32)) for i in references]

    def score(self, images, batch_size=8, cancel=None, midline_angle=None):
        from medad_viewer.engine.records import SliceScore
        out = []
        for j, im in enumerate(images):
            i = int(round(float(im.flat[0]) * 100))
            out.append(SliceScore(j, self.scores[i], self.scores[i], np.full((2, 2), i, np.float32)))
        return out

    def percentile_of(self, raw):
        return raw


def _index_series(n, volume=True):
    """A series whose slice i is filled with i / 100, so the scripted detector knows which slice it scores."""
    from medad_viewer.io.series import Series
    vol = np.stack([np.full((4, 4), i / 100, np.float32) for i in range(n)])
    return Series.from_array(vol, uid="test", modality="MR", description="test", source="test", is_volume=volume)


def test_through_plane_neighbour_and_score():
    from medad_viewer.engine.series_scores import through_plane_neighbour, through_plane_score
    wanted = {0, 1, 2, 3, 7, 8}
    status = {0: "scored", 1: "scored", 2: "reference", 3: "scored", 7: "scored"}
    assert through_plane_neighbour(1, -1, wanted, status, 2) == 0
    assert through_plane_neighbour(1, +1, wanted, status, 2) == 3  # 2 is a reference: skipped
    assert through_plane_neighbour(3, +1, wanted, status, 2) is None  # 4, 5 not wanted: none within 2
    assert through_plane_neighbour(7, +1, wanted, status, 2) is False  # 8 not read yet: wait
    assert through_plane_neighbour(0, -1, wanted, status, 2) is None
    assert through_plane_score(90.0, [10.0, 40.0]) == 40.0  # a one-slice spike comes down to its neighbours
    assert through_plane_score(90.0, [95.0]) == 90.0  # confirmed by a neighbour: kept
    assert through_plane_score(90.0, []) == 90.0  # alone: its own


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_a_volume_caps_each_slice_by_its_neighbours_and_delivers_each_once(batch):
    from medad_viewer.engine.series_scores import score_series
    scores = [10.0, 99.0, 12.0, 80.0, 85.0, 97.0, 11.0]  # a spike at 1; a lesion over 3-5
    series = _index_series(len(scores))
    got = []
    out = score_series(_ScriptedDetector(scores), series, normalizer=lambda x: x, batch_size=batch,
                       on_result=got.append)
    assert sorted(s.index for s in got) == list(range(len(scores)))  # each once
    assert all(int(s.map[0, 0]) == s.index for s in got)  # with its own map
    assert [out.results[i].score for i in range(len(scores))] == [10.0, 12.0, 12.0, 80.0, 85.0, 85.0, 11.0]
    assert [out.results[i].percentile for i in range(len(scores))] == [10.0, 12.0, 12.0, 80.0, 85.0, 85.0, 11.0]
    # not a volume (a folder of images), or the setting off: every slice its own score
    for s, det in ((_index_series(len(scores), volume=False), _ScriptedDetector(scores)),
                   (series, _ScriptedDetector(scores, through_plane="off"))):
        assert [score_series(det, s, normalizer=lambda x: x).results[i].score for i in range(7)] == scores
    # radiographs: off by kind
    rad = _ScriptedDetector(scores)
    rad.kind = "radiograph"
    assert [score_series(rad, series, normalizer=lambda x: x).results[i].score for i in range(7)] == scores


def test_reference_slices_are_not_a_neighbours_evidence():
    """A reference slice matches itself in the bank: its low score must not bring its neighbours down."""
    from medad_viewer.engine.series_scores import score_series
    scores = [10.0, 99.0, -5.0, 97.0, 12.0]  # 2 is a reference; 1 and 3 are a lesion on either side of it
    det = _ScriptedDetector(scores, references=[2])
    out = score_series(det, _index_series(5), normalizer=lambda x: x, batch_size=2)
    assert [out.results[i].score for i in range(5)] == [10.0, 97.0, -5.0, 97.0, 12.0]
    plain = score_series(_ScriptedDetector(scores), _index_series(5), normalizer=lambda x: x, batch_size=2)
    assert [plain.results[i].score for i in range(5)] == [10.0, 10.0, -5.0, 12.0, 12.0]  # the lesion lost


def test_a_cancelled_volume_delivers_what_it_held():
    from medad_viewer.engine.jobs import CancelToken, Cancelled
    from medad_viewer.engine.series_scores import score_series
    scores = [10.0, 99.0, 12.0, 80.0, 85.0, 97.0, 11.0]
    token = CancelToken()
    got = []

    def on_progress(f, msg):
        if f >= 3 / 7:
            token.cancel()

    with pytest.raises(Cancelled):
        score_series(_ScriptedDetector(scores), _index_series(7), normalizer=lambda x: x, batch_size=3,
                     progress=on_progress, cancel=token, on_result=got.append)
    # slices 0-2 scored: all three delivered, 2 with the one neighbour scored so far
    assert {s.index: s.score for s in got} == {0: 10.0, 1: 12.0, 2: 12.0}


def test_the_demo_volume_keeps_its_tumour_slices_flagged_through_the_slices(sample_data, effnet):
    """Real data: the bundled whole-head MR with its tumour; a slice's score never rises, the tumour's slices,
    which confirm each other, keep theirs."""
    from medad_viewer.engine.series_scores import score_series
    series = load_study(str(sample_data / "mr-brain" / "brain1_image.nrrd")).series[0]  # the demo study
    labels = load_study(str(sample_data / "mr-brain" / "brain1_label.nrrd")).series[0]
    tumour = [z for z in range(labels.num_slices) if np.asarray(labels.slice(z)).any()]
    norm = normalizer_for_series(series)
    refs = [z for z in (3, 7, 20, 23) if z not in tumour]
    det = AnomalyDetector(DetectorSettings(input_size=128, modality="MR"), effnet, torch.device("cpu"))
    det.fit([norm(series.slice(z)) for z in refs])
    test = [z for z in range(series.num_slices) if z not in refs]
    on = score_series(det, series, test, normalizer=norm)
    det.settings = replace(det.settings, through_plane="off")
    off = score_series(det, series, test, normalizer=norm)
    assert all(on.results[z].score <= off.results[z].score + 1e-9 for z in test)
    assert sum(on.results[z].score < off.results[z].score - 1e-9 for z in test) >= 1  # it does something
    flagged = {name: {z for z in test if r.results[z].percentile >= 95} for name, r in (("on", on), ("off", off))}
    assert flagged["on"] & set(tumour) == flagged["off"] & set(tumour) and len(flagged["on"] & set(tumour)) >= 5


def test_the_memory_bank_calibrates_on_the_references_and_their_mirrors_each_without_its_copies(head, effnet):
    """k references give 2k normal image scores (each reference and its mirror, scored without either copy of it);
    one reference only its mirror (the original stands in for another normal slice)."""
    img, lab = head
    normal = [img[z] for z in range(6, 20) if not lab[z].any()]
    det = fit_detector(normal[:3], DetectorSettings(input_size=128, modality="MR"), backbone=effnet)
    cal = det.calibration.image_scores
    assert len(cal) == 6
    own = det.score([normal[0]])[0].score  # a reference scored as it is: it matches itself in the bank
    assert min(cal) > own + 0.5, (cal, own)  # no calibration slice saw its own copies
    one = fit_detector(normal[:1], DetectorSettings(input_size=128, modality="MR"), backbone=effnet)
    assert len(one.calibration.image_scores) == 1
    plain = fit_detector(normal[:3], DetectorSettings(input_size=128, modality="MR", bank_flip=False),
                         backbone=effnet)
    assert len(plain.calibration.image_scores) == 3


def test_local_aggregate_is_the_mean_over_the_neighbours_inside_the_grid():
    """The shifted-sum box equals avg_pool2d without padded counts (PatchCore's aggregation), borders and grids
    smaller than the kernel included; unit_channels equals F.normalize over the channels."""
    from medad_viewer.engine.memory_bank import local_aggregate, unit_channels
    g = torch.Generator().manual_seed(2)
    for shape, kernel in (((2, 3, 7, 5), 3), ((1, 4, 6, 6), 5), ((1, 2, 2, 1), 3), ((1, 1, 1, 1), 3)):
        x = torch.randn(*shape, generator=g)
        want = torch.nn.functional.avg_pool2d(x, kernel, stride=1, padding=kernel // 2, count_include_pad=False)
        torch.testing.assert_close(local_aggregate(x, kernel), want, rtol=1e-5, atol=1e-6)
    x = torch.randn(2, 6, 4, 4, generator=g)
    x[0, :, 0, 0] = 0  # a zero vector stays zero
    torch.testing.assert_close(unit_channels(x), torch.nn.functional.normalize(x, dim=1), rtol=1e-5, atol=1e-7)


def test_midline_at_a_given_angle_searches_only_the_position(head):
    """A volume's slices get its axis angle (`volume_midline_angle`): the axis keeps that angle and is placed where the
    free search puts it; a shifted head moves it by the shift."""
    from medad_viewer.engine.symmetry import Midline, series_angle
    img, _ = head
    p = prepare(img[10], 256)
    free = midline(p.image, p.body)
    fixed = midline(p.image, p.body, angle=free.angle)
    assert fixed.angle == free.angle and abs(fixed.cx - free.cx) < 1.0
    shift = np.float32([[1, 0, 9], [0, 1, 0]])
    moved = midline(cv2.warpAffine(p.image, shift, (256, 256)),
                    cv2.warpAffine(p.body.astype(np.float32), shift, (256, 256)) > 0.5, angle=free.angle)
    assert moved.angle == free.angle and abs(moved.cx - free.cx - 9) < 1.5, (free, moved)
    assert midline(p.image, p.body, angle=-7.0).angle == -7.0
    # the volume's angle: the median of those found (slices without a body found none)
    mk = lambda a: Midline(0.0, 0.0, a, 1.0)  # noqa: E731
    assert series_angle([mk(2.0), None, mk(-1.0), mk(14.0)]) == 2.0 and series_angle([None]) is None


def test_filters_on_the_regions_box_equal_the_whole_image():
    """The masked blur, the guided filter and the local-max image score are computed on each region's bounding box
    grown by their radius (`region_box`): the same values as on the whole image, for regions inside the image,
    touching its border, or empty."""
    from medad_viewer.engine.image_score import image_scores
    from medad_viewer.engine.maps import masked_blur_np

    def blur_whole(maps, masks, sigma):
        k = 2 * int(round(3 * sigma)) + 1
        out = np.zeros(maps.shape, np.float32)
        for i in range(len(maps)):
            w = masks[i].astype(np.float32)
            num = cv2.GaussianBlur(maps[i] * w, (k, k), sigma, borderType=cv2.BORDER_REFLECT_101)
            den = cv2.GaussianBlur(w, (k, k), sigma, borderType=cv2.BORDER_REFLECT_101)
            out[i] = np.where(masks[i], num / np.maximum(den, 1e-6), 0.0)
        return out

    def guided_whole(maps, guides, regions, radius, eps):
        k = (2 * radius + 1, 2 * radius + 1)
        out = np.zeros(maps.shape, np.float32)
        for i in range(len(maps)):
            w = regions[i].astype(np.float32)
            n = np.maximum(cv2.boxFilter(w, -1, k, normalize=True, borderType=cv2.BORDER_CONSTANT), 1e-6)
            mean = lambda x: cv2.boxFilter(np.float32(x * w), -1, k, borderType=cv2.BORDER_CONSTANT) / n  # noqa: E731
            g, m = guides[i], maps[i]
            mg, mm = mean(g), mean(m)
            a = (mean(g * m) - mg * mm) / (mean(g * g) - mg * mg + eps)
            b = mm - a * mg
            inside = regions[i]
            if inside.any():
                out[i] = np.where(inside, np.clip(mean(a) * g + mean(b), m[inside].min(), m[inside].max()), 0.0)
        return out

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:96, :96]
    regions = np.stack([((yy - 48) ** 2 + (xx - 40) ** 2) < 20 ** 2,  # inside
                        ((yy - 5) ** 2 + (xx - 90) ** 2) < 15 ** 2,  # over the top-right corner
                        np.zeros((96, 96), bool),  # empty
                        np.ones((96, 96), bool)])  # everything
    maps = rng.random((4, 96, 96)).astype(np.float32)
    guides = cv2.GaussianBlur(rng.random((96, 96, 4)).astype(np.float32), (0, 0), 2).transpose(2, 0, 1).copy()
    np.testing.assert_allclose(masked_blur_np(maps, regions, 2.0), blur_whole(maps, regions, 2.0), atol=1e-6)
    np.testing.assert_allclose(guided_within(maps, guides, regions, 8, 1e-3),
                               guided_whole(maps, guides, regions, 8, 1e-3), atol=1e-5)
    want = []
    for m, r in zip(maps, regions):
        num = cv2.blur(m * r, (13, 13), borderType=cv2.BORDER_CONSTANT)
        den = cv2.blur(r.astype(np.float32), (13, 13), borderType=cv2.BORDER_CONSTANT)
        want.append(float(np.where(r, num / np.maximum(den, 1e-6), -np.inf).max()) if r.any() else 0.0)
    np.testing.assert_allclose(image_scores(maps, regions, "local_max", 13.0, 0.0), want, atol=1e-6)
