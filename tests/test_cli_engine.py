"""`medad-viewer score` and `medad-viewer eval` end to end on real sample data (small inputs, training-free method)."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np

from medad_viewer.cli import main
from medad_viewer.report.score_dir import read_score_dir

REPO = Path(__file__).resolve().parent.parent


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_devset", REPO / "benchmarks" / "build_devset.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_score_ct_series_writes_scores_maps_and_run(tmp_path, sample_data, capsys):
    ct = str(sample_data / "ct-dicom")
    out = tmp_path / "run"
    rc = main(["score", ct, "--refs", f"{ct}:2,6,12", "--out", str(out), "--method", "memory",
               "--input-size", "128", "--slices", "0-4,15"])
    assert rc == 0
    run = read_score_dir(out)
    assert list(run.indices) == [0, 1, 2, 3, 4, 15]
    assert run.maps.shape == (6, 512, 512) and run.maps.dtype == np.float32
    assert np.all(np.diff(run.positions_mm[:5]) > 0)
    assert run.run["backbone"] == "efficientnet-lite2" and "ImageNet" in run.run["weights"]
    assert run.run["method"] == "memory"
    assert [r["index"] for r in run.run["references"]] == [2, 6, 12]
    assert run.run["target"]["num_slices"] == 20 and run.run["target"]["modality"] == "CT"
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert [int(r["slice_index"]) for r in rows] == [0, 1, 2, 3, 4, 15]
    # A reference slice is in the bank: it scores as the most normal of the slices scored.
    ref_row = next(r for r in rows if r["slice_index"] == "2")
    assert float(ref_row["raw_score"]) == min(float(r["raw_score"]) for r in rows)
    assert all(0.0 <= float(r["percentile"]) <= 100.0 for r in rows)
    text = (out / "run.json").read_text()
    assert "PatientName" not in text
    # CT is a cross-section: the slice's own mirror joins; run.json keeps the settings as they ran
    assert run.run["kind"] == "section" and run.run["settings"]["self_mirror"] == "geo_gated"
    assert "scored as cross-sections" in capsys.readouterr().err


def test_score_xray_png_end_to_end(tmp_path, sample_data):
    x = sample_data / "xray"
    out = tmp_path / "xr"
    rc = main(["score", str(x / "tbx11k_tb0005_tb.png"), "--refs", str(x / "tbx11k_h0001_healthy.png"),
               "--refs", str(x / "00027426_000.png"), "--out", str(out), "--method", "memory", "--input-size", "128"])
    assert rc == 0
    run = read_score_dir(out)
    import cv2
    h, w = cv2.imread(str(x / "tbx11k_tb0005_tb.png"), cv2.IMREAD_UNCHANGED).shape[:2]
    assert run.maps.shape == (1, h, w)
    assert len(run.run["references"]) == 2
    # plain PNGs, modality unknown: half the references look like radiographs, so the study is one
    assert run.run["kind"] == "radiograph"
    assert run.run["settings"]["self_mirror"] == "off" and run.run["settings"]["image_score"] == "mean"


def test_score_reports_bad_references_without_traceback(tmp_path, sample_data, capsys):
    ct = str(sample_data / "ct-dicom")
    rc = main(["score", ct, "--refs", f"{ct}:40", "--out", str(tmp_path / "r"), "--method", "memory"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "out of range" in err and "Traceback" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["score", str(empty), "--refs", f"{ct}:1", "--out", str(tmp_path / "r2")])
    assert rc == 2
    assert "nothing could be loaded" in capsys.readouterr().err


def test_eval_json_on_a_bmad_layout(tmp_path, sample_data, capsys):
    _load_builder().build_mr_brain(sample_data / "mr-brain", tmp_path)
    capsys.readouterr()  # the builder's own summary lines
    fold = tmp_path / "mr-brain-b"
    rc = main(["eval", str(fold), "--k", "2", "--seeds", "0,1", "--method", "memory", "--input-size", "96", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("image_auroc", "pixel_auroc", "aupro", "f1_max", "adapt_s", "score_s_per_image", "backbone",
                "method", "k", "seeds"):
        assert key in out
    assert out["k"] == 2 and out["seeds"] == [0, 1] and out["method"] == "memory"
    assert 0.0 <= out["pixel_auroc"] <= 1.0 and out["image_auroc_min"] <= out["image_auroc"] <= out["image_auroc_max"]
    assert len(out["per_seed"]) == 2
    # Training-free: nothing ran for a number of steps, nothing could be cut short by the time cap.
    assert all(row["stopped_because"] is None and row["steps"] is None for row in out["per_seed"])
    # Image labels only (as BMAD's chest X-ray sets): pixel metrics are null, image metrics still computed.
    shutil.rmtree(fold / "test" / "Ungood" / "anomaly_mask")
    rc = main(["eval", str(fold), "--k", "2", "--seeds", "0", "--method", "memory", "--input-size", "96", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["pixel_auroc"] is None and out["aupro"] is None and out["image_auroc"] is not None


def test_the_demo_flags_its_tumour_and_colours_it_at_the_default_thresholds(tmp_path, sample_data):
    """Issue 19: the demo study scored from its own 8 reference slices at the defaults (as `medad-viewer --demo`
    and Adapt & score): the tumour's slices flagged (6 of 7; the seventh, with a sliver of tumour, is not), no
    normal slice, and most of the tumour's pixels coloured at the 99th percentile of normal, few others."""
    from medad_viewer.io import load_study
    demo = REPO / "resources" / "demo"
    refs = json.loads((demo / "reference_set.json").read_text())
    picks = sorted(r["index"] for r in refs["references"])
    out = tmp_path / "demo"
    assert main(["score", str(demo / "brain1_image.nrrd"), "--refs",
                 f"{demo / 'brain1_image.nrrd'}:{','.join(map(str, picks))}", "--out", str(out)]) == 0
    run = read_score_dir(out)
    label = load_study(str(demo / "brain1_label.nrrd")).series[0]
    lab = np.stack([np.asarray(label.slice(z)) > 0 for z in range(label.num_slices)])
    pct = dict(zip(run.indices, run.percentiles))
    tumour = [z for z in range(lab.shape[0]) if lab[z].any()]
    normal = [z for z in run.indices if z not in tumour and z not in picks]
    flagged = [z for z in tumour if pct[z] >= 95]
    assert len(flagged) >= 6 and not [z for z in normal if pct[z] >= 95], pct
    colour = run.run["calibration"]["pixel_value_at"]["99"]
    maps = dict(zip(run.indices, run.maps))
    for z in flagged:
        coloured = maps[z] >= colour
        assert coloured[lab[z]].mean() >= 0.7 and coloured[~lab[z]].mean() <= 0.01, z
