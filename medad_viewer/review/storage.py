"""Where the viewer keeps its own files, and atomic writes so a crash never leaves a half-written one."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

APP_NAME = "medad-viewer"
DATA_DIR_ENV = "MEDAD_VIEWER_DATA_DIR"

# mkstemp makes owner-only files; finished files get the usual permissions (read once, at import, while
# nothing else runs: os.umask can only be read by setting it).
_UMASK = os.umask(0)
os.umask(_UMASK)


def data_dir() -> Path:
    """The app data folder: $MEDAD_VIEWER_DATA_DIR, else the platform's per-user data location."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        base = Path(override).expanduser()
    elif sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming") / APP_NAME
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support" / APP_NAME
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / APP_NAME
    return base


def short_hash(text: str, n: int = 16) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:n]


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)` on a temporary file beside `path`, then move it into place in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        write(tmp)
        try:
            mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_UMASK
            os.chmod(tmp, mode)
        except OSError:
            pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_bytes(path, json.dumps(obj, indent=2, ensure_ascii=False).encode("utf-8"))


def atomic_write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Compressed .npz; built in memory first so the file on disk is written in one go."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def is_writable_dir(folder: str | os.PathLike) -> bool:
    """Whether files can be created in `folder` (created if missing). A folder whose mode has no write bit at all
    counts as read-only even for root (someone meant it so); otherwise it is tried for real, because permission bits
    lie on network shares and read-only mounts."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    try:
        if existing.stat().st_mode & 0o222 == 0:
            return False
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".probe.", dir=str(folder))
        os.close(fd)
        os.unlink(tmp)
        return True
    except OSError:
        return False
