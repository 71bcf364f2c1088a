"""Reference sets: the normal (and optionally known-abnormal) slices a detector is fitted on, saved as JSON; and
`resolve_series`, which series of the loaded studies a reference slice is from.

Sources are stored relative to the set file, so a set kept beside its studies (like the demo's) works from any copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..io.atomic import atomic_write, atomic_write_json
from ..io.series import Series, Study
from .storage import data_dir

FORMAT = "medad-viewer-reference-set/1"
KINDS = ("normal", "abnormal")


@dataclass
class ReferenceSlice:
    """One slice of one series. `mask` (bool, rows x columns) marks the finding on an abnormal example."""

    source: str  # the study path (file or folder) it was loaded from, absolute in memory
    series_uid: str
    index: int
    kind: str = "normal"
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)
    description: str = ""  # series description when picked, shown in the tray and used when the uid moved

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"reference kind must be one of {KINDS}, not {self.kind!r}")
        self.index = int(self.index)
        if self.mask is not None:
            self.mask = np.asarray(self.mask).astype(bool)

    @property
    def key(self) -> tuple[str, int]:
        return (self.series_uid, self.index)

    def mask_digest(self) -> str:
        if self.mask is None or not self.mask.any():
            return ""
        m = np.ascontiguousarray(self.mask, dtype=np.uint8)
        return hashlib.sha1(repr(m.shape).encode() + m.tobytes()).hexdigest()[:16]


@dataclass
class ReferenceSet:
    name: str = "Untitled"
    modality: str = ""
    references: list[ReferenceSlice] = field(default_factory=list)
    path: Path | None = field(default=None, compare=False)  # where it was last saved or loaded

    # ------------------------------------------------------------------------------------------------ editing
    def __len__(self) -> int:
        return len(self.references)

    def __iter__(self):
        return iter(self.references)

    def find(self, series_uid: str, index: int) -> int | None:
        for i, r in enumerate(self.references):
            if r.series_uid == series_uid and r.index == int(index):
                return i
        return None

    def add(self, ref: ReferenceSlice) -> int:
        """Add `ref`, or replace the entry for the same slice (a slice is either normal or abnormal, once)."""
        i = self.find(ref.series_uid, ref.index)
        if i is None:
            self.references.append(ref)
            i = len(self.references) - 1
        else:
            self.references[i] = ref
        return i

    def remove(self, i: int) -> ReferenceSlice:
        return self.references.pop(i)

    def normals(self) -> list[ReferenceSlice]:
        return [r for r in self.references if r.kind == "normal"]

    def abnormals(self) -> list[ReferenceSlice]:
        return [r for r in self.references if r.kind == "abnormal"]

    def copy(self) -> "ReferenceSet":
        return ReferenceSet(self.name, self.modality,
                            [ReferenceSlice(r.source, r.series_uid, r.index, r.kind,
                                            None if r.mask is None else r.mask.copy(), r.description)
                             for r in self.references], self.path)

    # -------------------------------------------------------------------------------------------------- hashing
    def content_hash(self) -> str:
        """Stable over saves and loads: which slices, in which order (the fit depends on it), kinds and masks.
        The name and file location do not count."""
        items = [[r.series_uid, r.index, r.kind, r.mask_digest()] for r in self.references]
        blob = json.dumps({"modality": self.modality, "references": items}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------------------------------------ save/load
    def to_dict(self, base: Path | None = None, mask_dir: Path | None = None) -> dict:
        refs = []
        for r in self.references:
            d = {"source": _relative_source(r.source, base), "series_uid": r.series_uid, "index": r.index,
                 "kind": r.kind}
            if r.description:
                d["description"] = r.description
            if r.mask is not None and mask_dir is not None and r.mask.any():
                d["mask"] = _relative_source(str(mask_dir / f"{r.mask_digest()}.png"), base)
            refs.append(d)
        return {"format": FORMAT, "name": self.name, "modality": self.modality, "references": refs}

    def write_masks(self, mask_dir: Path) -> None:
        """Write each abnormal example's mask as a PNG named by its content (unchanged masks are not rewritten)."""
        for r in self.references:
            if r.mask is not None and r.mask.any():
                target = Path(mask_dir) / f"{r.mask_digest()}.png"
                if not target.exists():
                    png = r.mask.astype(np.uint8) * 255
                    atomic_write(target, lambda tmp, png=png: _write_png(tmp, png))

    def save(self, path: str | os.PathLike, relative: bool = True) -> Path:
        """Write the set as JSON (atomically) and any masks as PNGs in `<stem>.masks/` beside it.

        relative: store sources relative to the set's folder (sets kept with their studies); named sets in the
        app data folder store absolute paths instead.
        """
        path = Path(path).resolve()
        mask_dir = path.with_name(path.stem + ".masks")
        self.write_masks(mask_dir)
        atomic_write_json(path, self.to_dict(path.parent if relative else None, mask_dir))
        self.path = path
        return path

    @classmethod
    def from_dict(cls, d: dict, base: Path, path: Path | None = None) -> "ReferenceSet":
        """Relative sources and mask files resolve against `base`."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError("not a MedAD Viewer reference set")
        refs = []
        for item in d.get("references", []):
            mask = None
            if item.get("mask"):
                img = cv2.imread(_absolute_source(item["mask"], base), cv2.IMREAD_GRAYSCALE)
                if img is not None:
                    mask = img > 127
            refs.append(ReferenceSlice(_absolute_source(item["source"], base), str(item["series_uid"]),
                                       int(item["index"]), item.get("kind", "normal"), mask,
                                       item.get("description", "")))
        return cls(d.get("name") or (path.stem if path else "Untitled"), d.get("modality", ""), refs, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ReferenceSet":
        """Read a set file. Raises ValueError with a readable message when it is not a reference set."""
        path = Path(path).resolve()
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path.name}: cannot read the reference set ({exc})") from exc
        try:
            return cls.from_dict(d, path.parent, path)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path.name} is not a usable MedAD Viewer reference set ({exc})") from exc


def resolve_series(ref: ReferenceSlice, studies: Mapping[str, Study],
                   load_study: Callable[[str], Study] | None = None, *,
                   fits: Callable[[Series], bool] | None = None) -> Series | None:
    """The series `ref` was picked from, or None: the one answer for the tray, scoring and the report.

    Tried in order: the series whose uid is `ref.series_uid` (in the study at `ref.source` first, then in any study
    of `studies`: pixel-derived uids survive a study being copied or moved); one that has it among its `aliases`
    (the path-based uids earlier versions gave files without a UID of their own); then, in the study at
    `ref.source` only, the one series of the same description, or the only series. A set kept beside its study
    (the demo's) may come from a copy at another path, where path-based uids differ.

    The study at `ref.source` is loaded with `load_study` when `studies` lacks it (and a loader is given); it is
    kept in `studies` when that is a mutable mapping, so the next reference from it is not loaded again. `fits`
    narrows every step to the series it accepts (e.g. of a recorded shape).
    """
    def accepted(found: list[Study | None]) -> list[Series]:
        return [s for st in found if st is not None for s in st.series if fits is None or fits(s)]

    def by_uid(found: list[Study | None]) -> Series | None:
        return next((s for s in accepted(found) if s.uid == ref.series_uid), None)

    own = studies.get(ref.source)
    others = [st for path, st in studies.items() if path != ref.source]
    hit = by_uid([own, *others])
    if hit is None and own is None and load_study is not None:
        # Only now: a series matched by uid in a study already loaded needs no second reading.
        own = load_study(ref.source)
        if isinstance(studies, MutableMapping):
            studies[ref.source] = own
        hit = by_uid([own])
    if hit is None:
        hit = next((s for s in accepted([own, *others]) if ref.series_uid in s.aliases), None)
    if hit is not None or own is None:
        return hit
    mine = accepted([own])
    same = [s for s in mine if ref.description and s.description == ref.description]
    if len(same) == 1:
        return same[0]
    return mine[0] if len(mine) == 1 else None


def _write_png(tmp: str, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError("could not encode the mask as PNG")
    with open(tmp, "wb") as f:
        f.write(buf.tobytes())


def _relative_source(source: str, base: Path | None) -> str:
    if base is None:
        return str(Path(source))
    try:
        return Path(os.path.relpath(Path(source).resolve(), base)).as_posix()
    except ValueError:  # another drive on Windows
        return str(Path(source))


def _absolute_source(source: str, base: Path) -> str:
    p = Path(source)
    return str(p if p.is_absolute() else (base / p).resolve())


# ---------------------------------------------------------------------------------------------------- named sets
def reference_sets_dir() -> Path:
    return data_dir() / "reference-sets"


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-.")
    return slug or "reference-set"


def save_named(ref_set: ReferenceSet, name: str | None = None) -> Path:
    """Save under a name in the app data folder, for reuse across studies."""
    if name:
        ref_set.name = name
    return ref_set.save(reference_sets_dir() / f"{_slug(ref_set.name)}.json", relative=False)


def list_named() -> list[tuple[str, Path]]:
    """(name, path) of every saved named set, by name."""
    out = []
    folder = reference_sets_dir()
    if not folder.is_dir():
        return out
    for p in sorted(folder.glob("*.json")):
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(d, dict) and d.get("format") == FORMAT:
            out.append((str(d.get("name") or p.stem), p))
    return sorted(out, key=lambda t: t[0].lower())


def load_named(name: str) -> ReferenceSet:
    for n, p in list_named():
        if n == name:
            return ReferenceSet.load(p)
    raise KeyError(f"no saved reference set named {name!r}")
