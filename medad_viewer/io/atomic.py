"""Write-then-rename: a crash, an error or a cancel never leaves a half-written file behind.

The one place every layer writes its files through (saved adaptations, sessions, reference sets, score folders,
reports and exported volumes). It lives at the bottom of the package, beside the readers, so engine, review and
report can all use it without importing each other.

    with atomic_output("maps.nii.gz") as tmp:   # tmp keeps the suffix, so format-by-extension writers work
        sitk.WriteImage(img, tmp)
    atomic_write_json("session.json", {...})
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np

# Read once at import, while nothing else runs (os.umask can only be read by setting it): finished files get the
# modes any new file would get, not mkstemp's owner-only 0600 (a report or score folder is made to be handed on).
_UMASK = os.umask(0)
os.umask(_UMASK)

# Compound suffixes writers pick their format by (SimpleITK needs the real one at the end of the temporary name).
_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".pdf", ".png", ".csv", ".json")


class Cancellable(Protocol):
    def raise_if_cancelled(self) -> None: ...


def suffix_of(path: str | os.PathLike) -> str:
    """The file's format suffix, compound ones (".nii.gz") included."""
    name = os.fspath(path).lower()
    for s in _SUFFIXES:
        if name.endswith(s):
            return s
    return Path(name).suffix


PART = ".part"  # temporaries are named ".<stem>.<random>.part<suffix>" beside their target


def leftover_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Temporaries of this writer left under `folder` (none unless a process died mid-write)."""
    return [p for p in Path(folder).rglob(".*") if PART in p.name and p.is_file()]


@contextmanager
def atomic_output(path: str | os.PathLike, cancel: Cancellable | None = None) -> Iterator[str]:
    """Yield a temporary path beside `path` with the same suffix; move it into place when the block succeeds.

    The cancel token (anything with `raise_if_cancelled()`) is checked once more before the move, so a cancel
    during the final write still leaves nothing. An existing file keeps its permissions.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix_of(target)
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f"{PART}{suffix}", dir=str(target.parent))
    os.close(fd)
    try:
        yield tmp
        if cancel is not None:
            cancel.raise_if_cancelled()
        try:
            os.chmod(tmp, target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_UMASK)
        except OSError:  # some network shares refuse chmod; the file itself is still good
            pass
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)` on a temporary file beside `path`, then move it into place in one step."""
    with atomic_output(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` and fsync it before the rename, so a power cut leaves the old file or the new one."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return atomic_write(path, write)


def json_default(o: Any) -> Any:
    """`json.dumps(default=...)` for what our records hold besides plain types: numpy values and paths.

    Anything else is a bug in the caller and raises TypeError (before the write, so the old file stays)."""
    if hasattr(o, "tolist"):  # numpy arrays and scalars
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Serialise first (so a failure raises before anything touches the disk), then write."""
    return atomic_write_bytes(path, json.dumps(obj, indent=2, ensure_ascii=False, default=json_default).encode("utf-8"))


def atomic_write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Compressed .npz; built in memory first so the file on disk is written in one go."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())
