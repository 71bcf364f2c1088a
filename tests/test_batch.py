"""`medad-viewer batch` on a local Dask cluster: a folder of studies scored into a ranked, de-identified worklist;
a second run resumes (skips what is done, starts no cluster); a broken file and a modality without references are
rows, never a stop."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from medad_viewer.cli import main

pytest.importorskip("distributed")


def test_batch_scores_a_folder_into_a_worklist_and_resumes(sample_data, tmp_path, capsys):
    root = tmp_path / "archive"
    root.mkdir()
    shutil.copy(sample_data / "mr-brain" / "brain2_image.nrrd", root / "smith_john_head.nrrd")
    shutil.copy(sample_data / "ct-nifti" / "example_ct_sm.nii.gz", root / "abdomen.nii.gz")
    (root / "doe_jane.nii.gz").write_bytes(b"not a volume")
    out = tmp_path / "results"
    refs = str(sample_data / "mr-brain" / "brain1_image.nrrd") + ":2,5,8,10,18,20"
    args = ["batch", str(root), "--refs", refs, "--out", str(out), "--workers", "1", "--input-size", "96"]
    assert main(args) == 0
    assert "Dask dashboard" in capsys.readouterr().err
    rows = json.loads((out / "worklist.json").read_text())["rows"]
    by_status = {r["status"]: r for r in rows}
    assert sorted(r["status"] for r in rows) == ["failed", "no references", "scored"]
    mr = by_status["scored"]
    assert mr["modality"] == "MR" and mr["slices"] == 23 and mr["top_score"] is not None
    assert "CT" in by_status["no references"]["message"]  # never scored against the MR references
    # De-identified: pseudonyms, and no file name (a patient's name here) anywhere in the table
    text = (out / "worklist.csv").read_text() + (out / "worklist.json").read_text()
    assert "smith" not in text and "doe_jane" not in text and mr["study"].startswith("Study-")
    assert by_status["failed"]["message"].startswith(by_status["failed"]["study"])
    folder = out / mr["results"]
    maps = np.load(folder / "maps.npy")
    assert maps.shape == (23, 256, 256) and json.loads((folder / "row.json").read_text()) == mr
    assert json.loads((folder / "run.json").read_text())["target"]["num_slices"] == 23
    assert not list((out / "series").glob(".*.part"))  # nothing half-written left
    written = (folder / "maps.npy").stat().st_mtime_ns
    # A second run: the scored series is skipped (same references, same settings), no cluster is started.
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "0 to score" in err and "Dask dashboard" not in err
    again = json.loads((out / "worklist.json").read_text())["rows"]
    assert [r["status"] for r in again] == [r["status"] for r in rows]
    assert (folder / "maps.npy").stat().st_mtime_ns == written


def _dies_once(marker, item, *args):
    """A task that, the first time, leaves a half-written result folder and kills its worker process, as a SIGKILL
    in the middle of writing would; its retry (on another worker) scores the series."""
    import os
    from pathlib import Path

    from medad_viewer.batch.run import score_on_worker

    if not Path(marker).exists():
        Path(marker).write_text("died")
        out = Path(args[3])
        (out / "series" / ".0000.dead.part").mkdir(parents=True, exist_ok=True)
        (out / "series" / ".0000.dead.part" / "maps.npy").write_bytes(b"half")
        os._exit(1)
    return score_on_worker(item, *args)


def test_a_worker_killed_in_the_middle_loses_nothing(sample_data, tmp_path):
    import functools
    import sys

    import cloudpickle

    from medad_viewer.batch.run import run_worklist
    from medad_viewer.cli_batch import fit_groups, reference_groups

    root = tmp_path / "archive"
    root.mkdir()
    for name in ("a", "b"):
        shutil.copy(sample_data / "ct-nifti" / "example_ct_sm.nii.gz", root / f"{name}.nii.gz")
    out = tmp_path / "results"
    groups = reference_groups([str(sample_data / "ct-nifti" / "example_ct_sm.nii.gz") + ":3,11,19,26"])
    args = type("A", (), {"method": "memory", "backbone": "efficientnet-lite2", "weights": None, "input_size": 64})
    detectors = fit_groups(groups, args)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    rows = run_worklist(str(root), detectors, str(out), workers=2, say=lambda _t: None,
                        task=functools.partial(_dies_once, str(tmp_path / "died")))
    assert (tmp_path / "died").exists()  # a worker did die
    assert [r["status"] for r in rows] == ["scored", "scored"]
    done = sorted(p.name for p in (out / "series").iterdir())
    assert len(done) == 2 and not any(n.endswith(".part") for n in done)  # each series once, no partial files


def test_ctrl_c_stops_cleanly_and_the_next_run_goes_on(sample_data, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    root = tmp_path / "archive"
    root.mkdir()
    for k in range(6):
        shutil.copy(sample_data / "ct-nifti" / "example_ct_sm.nii.gz", root / f"s{k}.nii.gz")
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "medad_viewer.cli", "batch", str(root), "--refs",
           str(sample_data / "ct-nifti" / "example_ct_sm.nii.gz") + ":3,11,19,26", "--out", str(out),
           "--input-size", "96"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # The child takes Ctrl+C as a terminal would give it, even when this test runs in the background of a
    # non-interactive shell, whose children start with SIGINT ignored (Python then never raises KeyboardInterrupt)
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    said = []
    for line in proc.stderr:  # interrupted once the first series is scored
        said.append(line)
        if line.startswith("[1/"):
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.communicate(timeout=60)[1]
    assert proc.returncode != 0, "".join(said) + rest
    rows = json.loads((out / "worklist.json").read_text())["rows"]
    assert 1 <= len(rows) < 6 and all(r["status"] == "scored" for r in rows)  # what was done is kept
    assert not list((out / "series").glob(".*.part"))
    done = len([p for p in (out / "series").iterdir()])  # the worklist's, and any finished while it stopped
    assert len(rows) <= done < 6
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"{6 - done} to score" in again.stderr  # the next run goes on from there
    final = json.loads((out / "worklist.json").read_text())["rows"]
    assert len(final) == 6 and all(r["status"] == "scored" for r in final)
