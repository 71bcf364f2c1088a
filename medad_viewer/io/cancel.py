"""The cancel token every long job polls, and the exception it raises. At the bottom of the package (beside the
readers, as `atomic` is) so loading, the engine, reports and the worker all share one.

`Cancelled` derives from BaseException, like asyncio.CancelledError: the many "one bad file must not stop the
others" handlers (`except Exception`) turn failures into messages, and a cancel must pass through all of them.
"""

from __future__ import annotations

import threading


class Cancelled(BaseException):
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
