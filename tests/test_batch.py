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
