"""Write-then-rename for exports: a failed or cancelled export never leaves a partial file behind."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..engine.jobs import CancelToken

# Compound suffixes writers pick their format by (SimpleITK needs the real one at the end of the temporary name).
# Read once at import, while nothing else runs (os.umask can only be read by setting it): exports get the modes any
# new file would get, not mkstemp's owner-only 0600 (a report is made to be handed on).
_UMASK = os.umask(0)
os.umask(_UMASK)

_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".pdf", ".png", ".csv", ".json")


def suffix_of(path: str | os.PathLike) -> str:
    name = os.fspath(path).lower()
    for s in _SUFFIXES:
        if name.endswith(s):
            return s
    return Path(name).suffix


@contextmanager
def atomic_output(path: str | os.PathLike, cancel: CancelToken | None = None) -> Iterator[str]:
    """Yield a temporary path beside `path` with the same suffix; move it into place when the block succeeds.

    The cancel token is checked once more before the move, so a cancel during the final write still leaves nothing.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix_of(target)
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".part{suffix}", dir=str(target.parent))
    os.close(fd)
    try:
        yield tmp
        if cancel is not None:
            cancel.raise_if_cancelled()
        os.chmod(tmp, target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
