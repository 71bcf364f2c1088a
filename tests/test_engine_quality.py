"""What makes the maps trustworthy: eval measures what users get, maps stay inside the anatomy without a rim, the
scoring region is the inside of the skull on whole-head MR (and the body elsewhere), and results do not depend on
how busy the machine is."""

from __future__ import annotations

import importlib.util
import math
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medad_viewer.cli import main
from medad_viewer.engine import adapt as adapt_module
from medad_viewer.engine.adapt import AdaptSettings
from medad_viewer.engine.backbones import load_backbone
from medad_viewer.engine.detector import DETECTOR_FORMAT, AnomalyDetector, DetectorSettings
from medad_viewer.engine.pipeline import fit_detector
from medad_viewer.engine.evaluate import BmadDataset, run_fold
from medad_viewer.engine.foreground import head_interior
from medad_viewer.engine.maps import masked_blur
from medad_viewer.engine.preprocess import normalizer_for_series, prepare
from medad_viewer.io import load_study
from medad_viewer.report.score_dir import read_score_dir

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def effnet():
    return load_backbone("efficientnet-lite2")


@pytest.fixture(scope="module")
def bmad(sample_data, tmp_path_factory):
    """The whole-head MR volumes as the BMAD layout the eval command reads (8-bit PNGs)."""
    spec = importlib.util.spec_from_file_location("build_devset", REPO / "benchmarks" / "build_devset.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path_factory.mktemp("devset")
    mod.build_mr_brain(sample_data / "mr-brain", out)
    return out


@pytest.fixture(scope="module")
def whole_head(sample_data):
    img = sitk.GetArrayFromImage(sitk.DICOMOrient(
        sitk.ReadImage(str(sample_data / "mr-brain" / "brain2_image.nrrd")), "LPS")).astype(np.float32)
    lo, hi = np.percentile(img[img > img.min()], [1, 99.5])
    return np.clip((img - lo) / (hi - lo), 0, 1)


def test_eval_and_score_give_the_same_map(bmad, tmp_path, effnet):
    fold = bmad / "mr-brain-b"
    ds = BmadDataset(fold)
    refs = ds.pick_references(2, seed=0)
    settings = DetectorSettings(method="memory", input_size=96)
    _, results, _, _ = run_fold(ds, refs, settings, effnet, torch.device("cpu"))
    target = next(i for i, lab in enumerate(ds.labels) if lab == 1)
    out = tmp_path / "run"
    rc = main(["score", str(ds.test_paths[target]), "--refs", str(refs[0]), "--refs", str(refs[1]),
               "--out", str(out), "--method", "memory", "--input-size", "96"])
    assert rc == 0
    run = read_score_dir(out)
    np.testing.assert_allclose(run.maps[0], results[target].map, rtol=1e-5, atol=1e-5)
    assert run.scores[0] == pytest.approx(results[target].score, rel=1e-5)


def test_8bit_images_are_used_as_exported_and_16bit_ones_windowed(tmp_path):
    ramp = np.tile(np.linspace(20, 200, 64).astype(np.uint8), (64, 1))
    cv2.imwrite(str(tmp_path / "a8.png"), ramp)
    cv2.imwrite(str(tmp_path / "a16.png"), ramp.astype(np.uint16) * 100)
    s8 = load_study(str(tmp_path / "a8.png")).series[0]
    s16 = load_study(str(tmp_path / "a16.png")).series[0]
    np.testing.assert_allclose(normalizer_for_series(s8)(s8.slice(0)), ramp / 255.0, atol=1e-6)
    n16 = normalizer_for_series(s16)(s16.slice(0))
    assert n16.min() == 0.0 and n16.max() == 1.0  # a window of its own range


def test_head_interior_leaves_out_scalp_and_skull_on_whole_head_mr(whole_head):
    found = 0
    for z in range(8, 20):  # from the orbits to above the ventricles
        p = prepare(whole_head[z], 256)
        inner = head_interior(p.image, p.body)
        if inner is None:
            continue
        found += 1
        assert inner.sum() < 0.85 * p.body.sum()
        # The scalp (outermost ring of the head) is outside; the centre of the head is inside.
        ring = p.body & ~cv2.erode(p.body.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        assert inner[ring].mean() < 0.05
        ys, xs = np.nonzero(p.body)
        assert inner[int(ys.mean()), int(xs.mean())]
        assert np.array_equal(p.region, inner)
    assert found >= 10


def test_head_interior_is_not_found_on_skull_stripped_mr(dev_data):
    pat = dev_data("brats2013") / "brats_2013_pat0001_1"
    flair = sitk.GetArrayFromImage(sitk.ReadImage(str(pat / "Flair_subtrMeanDivStd.nii.gz")))
    brain = sitk.GetArrayFromImage(sitk.ReadImage(str(pat / "brainmask.nii.gz"))) > 0
    for z in (40, 70, 100):
        v = flair[z]
        img = np.clip((v - v[brain[z]].min()) / np.ptp(v[brain[z]]), 0, 1) * brain[z]
        p = prepare(img.astype(np.float32), 256)
        assert head_interior(p.image, p.body) is None
        assert np.array_equal(p.region, p.body)


def test_head_interior_is_not_found_on_ct_or_xray(sample_data):
    ct = load_study(str(sample_data / "ct-dicom")).series[0]
    norm = normalizer_for_series(ct)
    for z in (0, 10, 19):
        p = prepare(norm(ct.slice(z)), 256, modality=ct.modality)
        assert np.array_equal(p.region, p.body)
    for name in ("00000001_000.png", "00027426_000.png", "tbx11k_h0001_healthy.png", "tbx11k_tb0005_tb.png"):
        xray = load_study(str(sample_data / "xray" / name)).series[0]  # a plain image: modality unknown (OT)
        p = prepare(normalizer_for_series(xray)(xray.slice(0)), 256, modality=xray.modality)
        assert np.array_equal(p.region, p.body), name


def test_smoothing_stays_inside_the_region():
    """Normalised convolution: whatever lies outside the mask (air, scalp) never reaches the inside."""
    maps = torch.zeros(1, 64, 64)
    maps[:, :, :20] = 10.0  # hot outside
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[:, :, 20:] = True
    out = masked_blur(maps, mask, 4.0)
    assert float(out[mask].abs().max()) < 1e-6
    assert float(out[~mask].abs().max()) == 0.0
    inside = torch.zeros(1, 64, 64)
    inside[:, 30:34, 40:44] = 1.0  # a hot spot inside is smoothed, not lost
    assert float(masked_blur(inside, mask, 4.0)[0, 32, 42]) > 0.05


def test_map_of_a_head_cropped_at_the_image_border_has_no_rim(whole_head, effnet):
    """A tight crop (as web JPGs are) puts anatomy against the image border; the map's edge band is no hotter than
    its inside, and outside the scoring region the map is a perfect match."""
    def crop(z):
        return np.ascontiguousarray(whole_head[z][24:232, 24:232])  # square, through the scalp: no padding

    det = fit_detector([crop(z) for z in (12, 14, 16, 18)], DetectorSettings(method="memory", input_size=128),
                       backbone=effnet)
    for z in (13, 15, 17):  # normal slices between the references
        img = crop(z)
        assert prepare(img, det.size).body[0].any()  # the head touches the image border
        out = det.score([img])[0]
        p = prepare(img, det.size)
        region = det.region_of(p)
        inner = cv2.erode(region.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        edge = region & ~inner
        m = cv2.resize(out.map, (det.size, det.size), interpolation=cv2.INTER_LINEAR)
        assert np.median(m[edge]) - np.median(m[inner]) < 0.5, f"slice {z}: a bright rim along the edge"
        far = ~cv2.dilate(region.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        assert np.allclose(m[far], m.min()), "outside the anatomy the map is a perfect match"


def test_results_do_not_depend_on_the_machine_speed(whole_head, effnet, monkeypatch):
    """Adaptation runs its steps; the time cap only ends a run that reaches it. A machine slow enough to spend
    most of the cap (but not all) must give exactly the model an idle machine gives."""
    refs = [whole_head[z] for z in (10, 13, 16, 19)]
    s = DetectorSettings(method="adapted", input_size=96,
                         adapt=AdaptSettings(max_steps=12, val_every=4, pool_size=32, batch_size=4,
                                             time_budget_s=1000.0, seed=3))
    idle = fit_detector(refs, s, backbone=effnet)
    real = time.monotonic
    calls = [0]
    start = real()

    def busy_clock() -> float:
        # A machine many times slower: a tenth of a real second passes as most of the cap, and however long the
        # run takes, its clock approaches 95 % of the cap without reaching it.
        calls[0] += 1
        return start + 950.0 * (1.0 - math.exp(-(real() - start) / 0.1))

    monkeypatch.setattr(adapt_module.time, "monotonic", busy_clock)
    loaded = fit_detector(refs, s, backbone=effnet)
    monkeypatch.setattr(adapt_module.time, "monotonic", real)
    assert calls[0] > 10
    assert loaded.adapt_report.stopped_because == idle.adapt_report.stopped_because != "time budget"
    assert loaded.adapt_report.steps == idle.adapt_report.steps
    a = idle.score([whole_head[15]])[0]
    b = loaded.score([whole_head[15]])[0]
    np.testing.assert_array_equal(a.map, b.map)


def test_a_reached_cap_is_reported(whole_head, effnet, monkeypatch):
    refs = [whole_head[z] for z in (10, 16)]
    s = DetectorSettings(method="adapted", input_size=96,
                         adapt=AdaptSettings(max_steps=10_000, val_every=5, pool_size=8, batch_size=4,
                                             patience=10**6, time_budget_s=2.0))
    det = fit_detector(refs, s, backbone=effnet)
    assert det.adapt_report.stopped_because == "time budget"
    assert det.adapt_report.steps < 10_000


def test_mirrored_references_calibrate_a_single_reference(whole_head, effnet):
    """With one reference there is nothing to leave out; its mirror stands in for another normal slice, so the
    normal scale is not the near-zero distance of a slice to itself."""
    det = fit_detector([whole_head[14]], DetectorSettings(method="memory", input_size=96), backbone=effnet)
    med, scale = det.component_scale["bank"]
    assert med > 0.01 and scale > 0.005
    same = det.score([whole_head[14]])[0]
    other = det.score([whole_head[9]])[0]  # the skull base: unlike the reference
    assert other.score > same.score
    no_flip = fit_detector([whole_head[14]], DetectorSettings(method="memory", input_size=96, bank_flip=False),
                           backbone=effnet)
    assert no_flip.component_scale["bank"][0] < med


def test_settings_of_an_older_version_still_load_and_its_saved_detectors_are_refitted(tmp_path, whole_head, effnet):
    old = {"method": "adapted", "backbone": "efficientnet-lite2", "ref_augmentations": 3, "restrict_to_body": True,
           "topk_fraction": 0.01, "image_score": "max", "adapt": {"max_steps": 300, "time_budget_s": 90.0}}
    s = DetectorSettings.from_dict(old)
    assert s.method == "adapted" and s.image_score == "max" and s.adapt.max_steps == 300
    det = fit_detector([whole_head[12], whole_head[16]], DetectorSettings(method="memory", input_size=96),
                       backbone=effnet)
    js = det.save(tmp_path / "old")
    js.write_text(js.read_text().replace(DETECTOR_FORMAT, "medad-viewer-detector/2"))
    with pytest.raises(ValueError, match="adapt again"):
        AnomalyDetector.load(tmp_path / "old", backbone=effnet)
