"""Where the viewer keeps its own files (atomic writes themselves live in `medad_viewer.io.atomic`)."""

from __future__ import annotations

import hashlib
import os
import sys
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


