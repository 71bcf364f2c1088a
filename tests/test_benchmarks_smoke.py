"""The measurement scripts of benchmarks/ run at a tiny size and print sane figures: a refactor that breaks one of
them fails here, not months later when someone re-measures the README. Each runs as a subprocess (as people run
it), with a time limit; the test reads its JSON line.

big_series.py has its own smoke test (test_big_series_smoke.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"


def run_script(name: str, *args: str, tmp_path: Path, timeout: float, sample_data: Path | None = None) -> dict:
    """Run benchmarks/`name`; its last JSON line (a dict). Fails on a non-zero exit or a traceback on stderr."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONDONTWRITEBYTECODE="1",
               TMPDIR=str(tmp_path))  # its temporary folders and files go with the test's
    env.pop("MEDAD_VIEWER_DATA_DIR", None)  # the scripts make their own app data folders
    if sample_data is not None:
        env["MEDAD_SAMPLE_DATA"] = str(sample_data)
    proc = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    said = f"{name} {' '.join(args)}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}"
    assert proc.returncode == 0, f"exit {proc.returncode}: {said}"
    assert "Traceback (most recent call last)" not in proc.stderr, said
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON line: {said}"
    out = json.loads(lines[-1])
    assert isinstance(out, dict), said
    return out


def test_crash_autosave(tmp_path):
    out = run_script("crash_autosave.py", "--trials", "2", "--seed", "0", "--verbose", tmp_path=tmp_path, timeout=180)
    assert out["trials"] == 2
    assert out["intact"] == 2  # each SIGKILLed session loads as one of the states that were saved
    assert out["stale"] == 0
    assert out["child_tracebacks"] == 0  # no gesture raised inside the window
    assert out["edits_mean"] > 0  # the children did edit before they were killed
    assert out["lost_edits_max"] is not None and 0 <= out["lost_edits_max"] <= 10


def test_cancel_latency(tmp_path):
    out = run_script("cancel_latency.py", "--trials", "1", "--slices", "40", tmp_path=tmp_path, timeout=300)
    assert out["trials"] == 1
    for kind in ("load", "adapt", "score", "export"):
        assert kind in out["max_cancel_s"], out
        assert 0 <= out["max_cancel_s"][kind] < 1.0, (kind, out)  # the README's target
        assert out["median_cancel_s"][kind] <= out["max_cancel_s"][kind]


def test_fuzz_loaders(tmp_path, sample_data):
    out = run_script("fuzz_loaders.py", "--cases", "5", "--seed", "0", tmp_path=tmp_path, timeout=180,
                     sample_data=sample_data)
    assert out["cases"] == 5
    assert out["tracebacks"] == 0
    assert out["hangs"] == 0
    assert out["over_2gb"] == 0
    assert 0 < out["max_rss_mb"] < 2048


def test_ui_latency(tmp_path):
    # The demo study (25 slices, the default memory bank: a few seconds), with cine, the probe and the three planes,
    # so that every path the script drives is run.
    out = run_script("ui_latency.py", "--json", "--cine", "--probe", "--layout", "1x3", tmp_path=tmp_path,
                     timeout=300)
    assert out["outcome"] == "finished"
    assert out["scored_slices"] == out["total_slices"] == 25
    assert out["ticks"] > 10
    assert 0 <= out["p99_stall_ms"] <= out["max_stall_ms"] < 5000  # sane; the README's figures need a quiet machine
    assert out["probe_moves"] > 0 and out["probe_shown"] == out["probe_moves"]
    assert out["layout"] == "1x3" and out["cine"] and out["probe"]
    assert out["detector"]["method"] == "memory"


def test_plane_perf(tmp_path):
    out = run_script("plane_perf.py", "--slices", "40", "--size", "96", "--repeat", "3", "--scored-every", "2",
                     tmp_path=tmp_path, timeout=120)
    assert out["slices"] == 40 and out["size"] == 96 and out["scored"] == 20
    for plane in ("coronal", "sagittal"):
        assert out[plane]["interpolated"] is True  # every other slice scored: the map is interpolated between
        for what in ("slice_ms", "map_ms", "drawings_ms"):
            assert 0 <= out[plane][what]["median"] <= out[plane][what]["max"] < 5000, (plane, what, out)



def test_build_devset_then_compare_methods_on_both_protocols(tmp_path, sample_data):
    """The README's results table comes from compare_methods.py: the other-patient protocol on a folder
    build_devset.py writes, and the same-study protocol through the app's scoring path, on the bundled MR volumes."""
    devset = tmp_path / "devset"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "build_devset.py"), "--sets", "mr", "--sample-data",
                           str(sample_data), "--out", str(devset)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in devset.iterdir()) == ["mr-brain-a", "mr-brain-b"]
    assert len(list((devset / "mr-brain-b" / "test" / "Ungood" / "img").glob("*.png"))) == 7  # brain1's tumour slices
    cache = tmp_path / "features"
    out = run_script("compare_methods.py", "--devset", str(devset), "--sets", "mr,mr-same", "--folds", "mr-brain-b",
                     "--seeds", "0", "--k", "2", "--variants", "memory", "--feature-cache", str(cache),
                     tmp_path=tmp_path, timeout=300)
    assert list(cache.glob("*.pt")), "the sweep's feature cache (feature_cache.py) wrote nothing"
    assert out["backbone"] == "efficientnet-lite2" and "ImageNet" in out["weights"]  # says what made the figures
    mr = out["results"]["memory"]["mr"]
    assert mr["image_auroc"]["mean"] >= 0.7  # brain1's tumour slices rank above its normal slices
    assert mr["pixel_auroc"]["mean"] >= 0.9
    same = out["results"]["memory"]["mr-same"]
    for key in ("slice_auroc", "pixel_auroc", "lesion_flagged", "normal_flagged", "lesion_px_coloured",
                "normal_head_px_coloured"):
        assert 0.0 <= same["mean"][key] <= 1.0, (key, same)
    assert same["mean"]["pixel_auroc"] >= 0.8
    assert same["mean"]["normal_flagged"] <= 0.25  # at the 95th percentile of normal, few normal slices flagged


def test_same_study_protocol(tmp_path):
    out = run_script("same_study.py", "--set", "mr", "--seeds", "0", "--folds", "2", tmp_path=tmp_path, timeout=300)
    assert out["set"] == "mr-same" and out["folds"] == 2 and out["seeds"] == [0]
    assert out["kinds"] == ["section"]  # an MR volume is scored as a cross-section
    assert out["intensity_weights"] == [0.0]  # the sample volumes do not say FLAIR
    assert out["mean"]["slice_auroc"] >= 0.8  # both volumes' tumour slices rank above their normal slices
    assert 0.0 <= out["mean"]["normal_head_px_coloured"] <= 0.05
    assert out["mean"]["normal_flagged"] <= 0.25  # flagged at the window's 95th percentile of normal
    assert out["mean"]["lesion_flagged"] >= 0.4  # brain1: 6 of its 7 tumour slices; brain2: none of its 3
    assert out["mean"]["lesion_flagged"] > 3 * out["mean"]["normal_flagged"]


def test_engine_perf(tmp_path):
    out = run_script("engine_perf.py", "--size", "96", "--slices", "4", "--rounds", "1", "--no-adapted", "--json",
                     tmp_path=tmp_path, timeout=300)
    assert out["slices"] == 4 and out["size"] == 96 and "efficientnet-lite2" in out["backbone"]
    assert out["forward_s_per_slice"] > 0
    m = out["memory"]
    for key in ("score_s_per_slice_k4", "score_s_per_slice_k16", "score_s_per_slice_no_mirror",
                "score_s_per_slice_flair", "score_s_per_slice_mirror_image", "series_s_per_slice_through_plane",
                "series_s_per_slice_plain", "score_s_per_slice_images", "volume_angle_s"):
        assert 0 < m[key] < 5.0, (key, m)
    assert m["ratio_images_to_forward"] == m["score_s_per_slice_images"] / out["forward_s_per_slice"]
    assert m["ratio_through_plane_to_plain"] == m["series_s_per_slice_through_plane"] / m["series_s_per_slice_plain"]
    assert m["ratio_score_to_forward"] == m["score_s_per_slice_k4"] / out["forward_s_per_slice"]
    assert out["bank_patches_k16"] > out["bank_patches_k4"] > 0
    assert out["peak_memory_mb"] > 0


def test_batch_scaling(tmp_path):
    out = run_script("batch_scaling.py", "--series", "2", "--workers", "1", "--input-size", "64", "--kill-trials", "1",
                     tmp_path=tmp_path, timeout=300)
    assert out["kill_trials"] == {"trials": 1, "workers_killed": 1, "runs_with_every_series_scored_once": 1}
    assert out["series"] == 2 and out["slices"] > 0
    assert out["one_process"]["series_per_min"] > 0 and out["workers_1"]["series_per_min"] > 0
    assert out["dask_overhead_1_worker"] == round(out["workers_1"]["seconds"] / out["one_process"]["seconds"] - 1, 3)
