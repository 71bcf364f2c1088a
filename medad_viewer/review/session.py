"""A review session of one study: series, references, review state, settings and the last scores, saved atomically.

Sessions live in the app data folder (`<data dir>/sessions/<study key>/`), never beside the study: studies come
from PACS exports, CDs, shared folders and other people's directories, and app state does not belong among patient
data. The key is what identifies the study, not where it lies: its DICOM StudyInstanceUIDs, and for series without
one (volumes, plain images, DICOM files without UIDs) the series' pixel-derived uids. A study that is copied or moved
finds its session again; two copies of one study share it.

When the app data folder cannot be written (a full disk, a read-only home), a spare folder in the system's temporary
directory is used and `SessionStore.notice` says so in plain words; when neither can be written, `SaveFailed` says
what to do, and the caller keeps everything in memory.

Sessions of earlier versions (in `<study folder>/.medad-viewer/`, or in the app data folder under a hash of the study
path) are moved here the first time their study is opened (`SessionStore.migrate_legacy`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .history import History
from .measurements import Measurements, measurement_from_dict
from .references import ReferenceSet
from .results import ScoreResults
from .state import ReviewState
from ..io.atomic import atomic_write_json, leftover_temporaries
from .storage import data_dir, short_hash

FORMAT = "medad-viewer-session/2"
_READABLE_FORMATS = ("medad-viewer-session/1", FORMAT)
LEGACY_DIR = ".medad-viewer"


@dataclass
class Session:
    study_path: str
    series_uid: str | None = None
    slice_index: int = 0
    reference_set: ReferenceSet = field(default_factory=ReferenceSet)
    review: ReviewState = field(default_factory=ReviewState)
    settings: dict = field(default_factory=dict)  # detector settings as used for the last run (DetectorSettings dict)
    view: dict = field(default_factory=dict)  # threshold, opacity, colour map, window per series...
    scores_summary: dict = field(default_factory=dict)  # series uid -> {detector, scored, total, complete, top}
    saved_at: float = 0.0
    measurements: Measurements = field(default_factory=Measurements)  # lengths and ellipse ROIs, all series
    # One undo history for the sitting: review actions and measurements in the order they were done.
    history: History = field(default_factory=History, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.review.history = self.history
        self.measurements.history = self.history


class SaveFailed(OSError):
    """Neither the app data folder nor the spare folder could be written; the message says what to do."""


def study_key(series: Iterable[Any]) -> str:
    """What identifies a study wherever it lies: its StudyInstanceUIDs, and the uids of series that have none."""
    tokens = set()
    for s in series:
        study_uid = str((getattr(s, "identifiers", None) or {}).get("StudyInstanceUID") or "").strip()
        tokens.add(f"study:{study_uid}" if study_uid else f"series:{s.uid}")
    return short_hash("\n".join(sorted(tokens)), 24)


def sessions_root() -> Path:
    return data_dir() / "sessions"


def spare_root() -> Path:
    """Where sessions go when the app data folder cannot be written."""
    user = os.environ.get("USER") or os.environ.get("USERNAME") or "user"
    return Path(tempfile.gettempdir()) / f"medad-viewer-{short_hash(user + str(data_dir()), 8)}" / "sessions"


def _plain(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


class SessionStore:
    """Where one study's session lives, and reading/writing it."""

    def __init__(self, key: str, study_path: str | os.PathLike):
        self.key = key
        self.study_path = Path(study_path).resolve()
        self.places = [sessions_root() / key, spare_root() / key]
        self._folder: Path | None = None
        # A plain-words note for the user after a save went to the spare folder (None when all went well).
        self.notice: str | None = None

    @classmethod
    def for_study(cls, study: Any, path: str | os.PathLike | None = None) -> "SessionStore | None":
        """The store of a loaded study (None when it has no series: nothing to review)."""
        if not study.series:
            return None
        return cls(study_key(study.series), path or study.source)

    @property
    def folder(self) -> Path:
        """The folder sessions are written to: where the newest session was found, else the app data folder."""
        if self._folder is None:
            found = self._existing()
            self._folder = found[0].parent if found else self.places[0]
        return self._folder

    @property
    def session_file(self) -> Path:
        return self.folder / "session.json"

    def scores_file(self, series_uid: str, folder: Path | None = None) -> Path:
        return (folder or self.folder) / f"scores-{short_hash(series_uid)}.npz"

    def _existing(self) -> list[Path]:
        """Session files that exist, newest first."""
        found = [p for p in (f / "session.json" for f in self.places) if p.is_file()]
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)

    # ------------------------------------------------------------------------------------------------ writing
    def _write(self, write) -> Path:
        """Run `write(folder)` in the current folder, then in the other places; SaveFailed when all fail."""
        failures = []
        order = [self.folder] + [p for p in self.places if p != self.folder]
        for folder in order:
            try:
                out = write(folder)
            except OSError as exc:
                failures.append((folder, exc))
                continue
            if folder != self._folder:
                first, exc = failures[0]
                self.notice = (f"The review session could not be saved in {first} ({_plain(exc)}); it is saved in "
                               f"{folder} instead. Free some disk space or fix the folder's permissions.")
            self._folder = folder
            return out
        where = "; ".join(f"{f}: {_plain(e)}" for f, e in failures)
        raise SaveFailed(f"The review session could not be saved ({where}). Everything is kept in memory while the "
                         f"study stays open: free some disk space, then press Ctrl+S to save again.")

    def save(self, session: Session) -> Path:
        session.saved_at = time.time()

        def write(folder: Path) -> Path:
            mask_dir = folder / "masks"
            session.reference_set.write_masks(mask_dir)
            return atomic_write_json(folder / "session.json", self._to_dict(session, mask_dir))

        return self._write(write)

    def _to_dict(self, session: Session, mask_dir: Path) -> dict:
        return {
            "format": FORMAT,
            "study_key": self.key,
            "study_path": str(self.study_path),
            "series_uid": session.series_uid,
            "slice_index": session.slice_index,
            "reference_set": session.reference_set.to_dict(None, mask_dir),
            "reference_set_path": str(session.reference_set.path) if session.reference_set.path else None,
            "review": session.review.to_dict(),
            "settings": session.settings,
            "view": session.view,
            "scores_summary": session.scores_summary,
            "measurements": session.measurements.to_list(),
            "saved_at": session.saved_at,
        }

    def save_scores(self, results: ScoreResults) -> Path:
        return self._write(lambda folder: results.save(self.scores_file(results.series_uid, folder)))

    # ------------------------------------------------------------------------------------------------ reading
    def load(self, study: Any | None = None) -> Session | None:
        """The newest saved session of this study, or None. A damaged file is skipped, never fatal. With the
        loaded `study`, references to its series point at where the study is now (it may have moved)."""
        for folder in self.places:
            _remove_stale_temporaries(folder)
        for path in self._existing():
            session = _read_session(path, str(self.study_path))
            if session is None:
                continue
            self._folder = path.parent  # keep writing where it was found, so a review does not split in two
            if study is not None:
                _point_references_here(session, study, str(self.study_path))
            return session
        return None

    def load_scores(self, series_uid: str) -> ScoreResults | None:
        candidates = {self.scores_file(series_uid, f) for f in [self.folder, *self.places]}
        found = sorted((p for p in candidates if p.is_file()), key=lambda p: p.stat().st_mtime, reverse=True)
        for p in found:
            try:
                res = ScoreResults.load(p)
            except ValueError:
                continue
            if res.series_uid == series_uid:
                return res
        return None

    # ---------------------------------------------------------------------------------------------- migration
    def migrate_legacy(self, study: Any) -> bool:
        """Move a session an earlier version kept beside the study (or under a hash of its path) here, renaming
        series from their old path-derived uids. Only when this store has no session yet. True if one moved."""
        if self._existing():
            return False
        found = [(f, prefix) for f, prefix in legacy_places(self.study_path)
                 if (f / f"{prefix}session.json").is_file()]
        found.sort(key=lambda fp: (fp[0] / f"{fp[1]}session.json").stat().st_mtime, reverse=True)
        renames = {alias: s.uid for s in study.series for alias in getattr(s, "aliases", ())}
        for folder, prefix in found:
            file = folder / f"{prefix}session.json"
            try:
                d = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(d, dict) or d.get("format") not in _READABLE_FORMATS:
                continue
            d = _renamed(d, renames)
            session = _session_from_dict(d, folder, str(self.study_path))
            if session is None:
                continue
            _point_references_here(session, study, str(self.study_path))
            scores = []
            for s in study.series:
                for old in (s.uid, *getattr(s, "aliases", ())):
                    p = folder / f"{prefix}scores-{short_hash(old)}.npz"
                    if p.is_file():
                        try:
                            res = ScoreResults.load(p)
                        except ValueError:
                            continue
                        res.series_uid = s.uid
                        scores.append((res, p))
                        break
            self.save(session)  # raises SaveFailed: then the old files stay where they are
            for res, _ in scores:
                self.save_scores(res)
            _remove_legacy(folder, prefix, [p for _, p in scores])
            return True
        return False


def _remove_stale_temporaries(folder: Path, age_s: float = 60.0) -> None:
    """A process killed while writing leaves its temporary beside the session; one older than a minute is nobody's."""
    if not folder.is_dir():
        return
    now = time.time()
    for p in leftover_temporaries(folder):
        try:
            if now - p.stat().st_mtime > age_s:
                p.unlink()
        except OSError:
            pass


def legacy_places(study_path: Path) -> list[tuple[Path, str]]:
    """(folder, file name prefix) where earlier versions kept the session of the study at `study_path`."""
    if study_path.is_dir():
        local, prefix = study_path / LEGACY_DIR, ""
    else:
        local, prefix = study_path.parent / LEGACY_DIR, study_path.name + "."
    return [(local, prefix), (sessions_root() / short_hash(str(study_path)), prefix)]


def _remove_legacy(folder: Path, prefix: str, score_files: list[Path]) -> None:
    """Delete what was migrated (best effort: a read-only folder keeps its copy, which is then ignored)."""
    for p in [folder / f"{prefix}session.json", *score_files, *folder.glob(f"{prefix}scores-*.npz")]:
        try:
            p.unlink()
        except OSError:
            pass
    shutil.rmtree(folder / f"{prefix}masks", ignore_errors=True)
    try:
        folder.rmdir()  # only when empty: other studies' sessions in a shared folder stay
    except OSError:
        pass


def _renamed(d: dict, renames: dict[str, str]) -> dict:
    """The session dict with series uids renamed (old path-derived uid -> current one)."""
    if not renames:
        return d
    r = lambda uid: renames.get(uid, uid)  # noqa: E731
    d = json.loads(json.dumps(d))
    d["series_uid"] = r(d.get("series_uid"))
    for item in d.get("reference_set", {}).get("references", []):
        item["series_uid"] = r(item.get("series_uid"))
    for item in d.get("review", {}).get("reviews", []):
        item["series_uid"] = r(item.get("series_uid"))
    for item in d.get("measurements", []):
        item["series_uid"] = r(item.get("series_uid"))
    d["scores_summary"] = {r(k): v for k, v in d.get("scores_summary", {}).items()}
    view = d.get("view", {})
    if isinstance(view.get("windows"), dict):
        view["windows"] = {r(k): v for k, v in view["windows"].items()}
    return d


def _point_references_here(session: Session, study: Any, path: str) -> None:
    """References to this study's series name the study where it is now."""
    uids = {s.uid for s in study.series}
    for ref in session.reference_set.references:
        if ref.series_uid in uids:
            ref.source = path


def _read_session(path: Path, study_path: str) -> Session | None:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict) or d.get("format") not in _READABLE_FORMATS:
        return None
    return _session_from_dict(d, path.parent, study_path)


def _session_from_dict(d: dict, folder: Path, study_path: str) -> Session | None:
    try:
        ref = ReferenceSet.from_dict(d["reference_set"], folder)
        if d.get("reference_set_path"):
            ref.path = Path(d["reference_set_path"])
        return Session(study_path, d.get("series_uid"), int(d.get("slice_index", 0)), ref,
                       ReviewState.from_dict(d.get("review", {})), d.get("settings", {}),
                       d.get("view", {}), d.get("scores_summary", {}), float(d.get("saved_at", 0.0)),
                       _measurements(d.get("measurements")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _measurements(items) -> Measurements:
    """The saved measurements (none in sessions of earlier versions); a damaged entry is left out, not fatal."""
    good = []
    for item in items if isinstance(items, list) else []:
        try:
            good.append(measurement_from_dict(item))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            continue
    return Measurements(good)
