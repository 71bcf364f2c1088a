"""The worklist's pieces that need no Dask: finding the series of a folder or archive, scoring one series with a
detector fitted once (the engine's one fit-and-score path, `engine.pipeline.score_target`), writing its results
atomically where a second run finds them (resume), and the worklist table itself (CSV and JSON, de-identified unless
asked otherwise).

A series' results live in `OUT/series/<key>/`, the same files as `medad-viewer score --out` (scores.csv, maps.npy,
run.json last, which names the study's path as `score`'s does, so that the results can be opened with their study)
plus `row.json`, the series' worklist row. The worklist itself is de-identified unless asked otherwise. The key hashes the study path, the series UID and the
detector's key (its references' pixels and settings), so a second run with the same references skips the series
and other references score it anew. A folder is written under a temporary name and renamed when complete: a series
whose task died half-way leaves no folder that reads as done.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..io.atomic import atomic_write_bytes, atomic_write_json
from ..io.deid import pseudonym

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
FLAG_PERCENTILE = 95.0  # a slice is flagged at the window's default (gui/ranking_panel.py)
COLUMNS = ("study", "series", "modality", "slices", "top_score", "top_percentile", "top_slice", "flagged_slices",
           "status", "message", "results")


@dataclass(frozen=True)
class SeriesItem:
    """One series found under the root (or, with `error`, a study that could not be read)."""

    study_path: str
    series_uid: str = ""
    modality: str = ""
    description: str = ""
    num_slices: int = 0
    error: str = ""


def study_paths(root: str | os.PathLike) -> list[str]:
    """The studies under `root`: each volume or image file, and each folder holding other files (DICOM files have any
    name) as one study; a folder that is a study is not searched further. A file is itself a study."""
    root = Path(root)
    if root.is_file():
        return [str(root)]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        files = sorted(f for f in filenames if not f.startswith("."))
        known = [f for f in files if f.lower().endswith(VOLUME_SUFFIXES + IMAGE_SUFFIXES)]
        out.extend(str(Path(dirpath) / f) for f in known)
        others = [f for f in files if f not in known and not f.lower().endswith((".json", ".txt", ".md", ".csv"))]
        if others:  # DICOM files (any name, often none): the folder is one study
            out.append(dirpath)
            dirnames[:] = []
    return out


def find_series(root: str | os.PathLike) -> list[SeriesItem]:
    """Every series of every study under `root`, read with the app's own loaders; a study that cannot be read is one
    item with its error, never a stop."""
    from ..io import load_study

    items = []
    for path in study_paths(root):
        try:
            study = load_study(path)
        except Exception as exc:  # noqa: BLE001 - a broken file is a row, not the end of the night
            items.append(SeriesItem(path, error=f"could not be read: {exc}"))
            continue
        if not study.series:
            detail = "; ".join(e.message for e in study.errors[:2]) or "no images found"
            items.append(SeriesItem(path, error=detail))
        for s in study.series:
            items.append(SeriesItem(path, s.uid, (s.modality or "OT").upper(), s.description or "", s.num_slices))
    return items


def result_key(item: SeriesItem, detector_key: str) -> str:
    """Where a series' results live, and whether a second run may skip it: its study, series and detector."""
    text = f"{Path(item.study_path).resolve()}\0{item.series_uid}\0{detector_key}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def done_row(out: str | os.PathLike, key: str) -> dict | None:
    """The row of a series already scored under `key` (its folder complete), or None."""
    folder = Path(out) / "series" / key
    if not (folder / "run.json").is_file() or not (folder / "row.json").is_file():
        return None
    try:
        return json.loads((folder / "row.json").read_text())
    except (OSError, ValueError):
        return None


def describe_row(item: SeriesItem, include_identifiers: bool) -> dict:
    """The row's study and series columns: pseudonyms unless identifiers are asked for (as the reports)."""
    if include_identifiers:
        return {"study": item.study_path, "series": item.description or item.series_uid}
    return {"study": pseudonym(str(Path(item.study_path).resolve())),
            "series": pseudonym(item.series_uid, prefix="Series") if item.series_uid else ""}


def score_item(item: SeriesItem, detector, detector_key: str, references: list[dict], out: str | os.PathLike,
               include_identifiers: bool = False) -> dict:
    """Score one series with a fitted detector and write its results; returns its worklist row. Runs on a worker."""
    from ..engine.pipeline import score_target
    from ..io import load_study
    from ..report.score_dir import ScoreRun, run_record, write_score_dir

    row = {**describe_row(item, include_identifiers), "modality": item.modality, "slices": item.num_slices}
    key = result_key(item, detector_key)
    study = load_study(item.study_path)
    series = next((s for s in study.series if s.uid == item.series_uid), None)
    if series is None:
        return {**row, "status": "failed", "message": "the series is no longer in its study", "results": ""}
    t0 = time.monotonic()
    scores = score_target(detector, series)
    ordered = sorted(scores.results)
    records = [scores.results[i] for i in ordered]
    run = run_record(detector, series, references, {"score_s": round(time.monotonic() - t0, 3),
                                                     "score_s_per_slice": round(scores.seconds / max(1, len(ordered)),
                                                                                4)})
    final = Path(out) / "series" / key
    tmp = Path(out) / "series" / f".{key}.{uuid.uuid4().hex[:8]}.part"
    top = max(records, key=lambda r: r.score) if records else None
    row.update({"top_score": None if top is None else round(top.score, 6),
                "top_percentile": None if top is None else round(top.percentile, 2),
                "top_slice": None if top is None else top.index,
                "flagged_slices": sum(r.percentile >= FLAG_PERCENTILE for r in records),
                "status": "scored", "message": "", "results": str(Path("series") / key)})
    write_score_dir(tmp, ScoreRun.of(records, [series.slice_position(i) for i in ordered], run))
    atomic_write_json(tmp / "row.json", row)
    if final.exists():  # another attempt finished first (a retried task): keep one
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return row


def failed_row(item: SeriesItem, message: str, include_identifiers: bool = False) -> dict:
    """A series (or study) that could not be scored, with the reason; without identifiers the reason names the
    study by its pseudonym, never by its path or file name (file names often carry a patient's name)."""
    row = describe_row(item, include_identifiers)
    if not include_identifiers:
        for text in sorted({item.study_path, str(Path(item.study_path).resolve()), Path(item.study_path).name},
                           key=len, reverse=True):
            message = message.replace(text, row["study"])
    return {**row, "modality": item.modality, "slices": item.num_slices, "status": "failed", "message": message,
            "results": ""}


def write_worklist(out: str | os.PathLike, rows: list[dict]) -> tuple[Path, Path]:
    """worklist.csv and worklist.json, most anomalous first (failed and unscored rows last), written atomically."""
    out = Path(out)
    ranked = sorted(rows, key=lambda r: (r.get("top_score") is None, -(r.get("top_score") or 0.0)))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in ranked:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    csv_path = atomic_write_bytes(out / "worklist.csv", buf.getvalue().encode())
    json_path = atomic_write_json(out / "worklist.json", {"rows": ranked, "flag_percentile": FLAG_PERCENTILE})
    return Path(csv_path), Path(json_path)


def clean_partials(out: str | os.PathLike) -> int:
    """Remove what tasks that died half-way left (`*.part` folders); returns how many."""
    folder = Path(out) / "series"
    n = 0
    for p in folder.glob(".*.part") if folder.is_dir() else ():
        shutil.rmtree(p, ignore_errors=True)
        n += 1
    return n
