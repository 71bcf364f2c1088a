"""Where the viewer keeps its own files (atomic writes themselves live in `medad_viewer.io.atomic`)."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

APP_NAME = "medad-viewer"
DATA_DIR_ENV = "MEDAD_VIEWER_DATA_DIR"

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
