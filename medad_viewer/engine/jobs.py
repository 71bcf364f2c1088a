"""What every long engine job takes: a progress callback and a cancel token."""

from __future__ import annotations

from typing import Callable, Protocol

from ..io.cancel import CancelToken, Cancelled

__all__ = ["CancelToken", "Cancelled", "Progress", "no_progress", "sub_progress"]


class Progress(Protocol):
    def __call__(self, fraction: float, message: str) -> None: ...


def no_progress(fraction: float, message: str) -> None:
    pass


def sub_progress(progress: Callable[[float, str], None], start: float, end: float) -> Callable[[float, str], None]:
    """Map a sub-job's 0..1 onto [start, end] of the parent's progress."""
    def report(fraction: float, message: str) -> None:
        progress(start + (end - start) * min(max(fraction, 0.0), 1.0), message)
    return report
