"""What every long engine job takes: a progress callback and a cancel token."""

from __future__ import annotations

import threading
from typing import Callable, Protocol


class Cancelled(Exception):
    """Raised inside a job when its cancel token is set; the job leaves no half-written files."""


class CancelToken:
    """A flag the caller sets and the job polls (thread-safe)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()


class Progress(Protocol):
    def __call__(self, fraction: float, message: str) -> None: ...


def no_progress(fraction: float, message: str) -> None:
    pass


def sub_progress(progress: Callable[[float, str], None], start: float, end: float) -> Callable[[float, str], None]:
    """Map a sub-job's 0..1 onto [start, end] of the parent's progress."""
    def report(fraction: float, message: str) -> None:
        progress(start + (end - start) * min(max(fraction, 0.0), 1.0), message)
    return report
