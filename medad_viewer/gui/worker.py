"""The one background worker for every long job (study loading, adaptation, scoring): a QThread running a plain
function, with its progress callbacks, partial results and outcome turned into Qt signals."""

from __future__ import annotations

import time
import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal

from ..io.cancel import CancelToken, Cancelled

# fn(progress, cancel, emit_partial) -> result
JobFunction = Callable[[Callable[[float, str], None], CancelToken, Callable[[Any], None]], Any]


class _Runner(QThread):
    def __init__(self, worker: "Worker", parent: QObject | None) -> None:
        super().__init__(parent)
        self.worker = worker

    def run(self) -> None:
        self.worker._run()


class Worker(QObject):
    """Runs `fn` in its own thread. The worker object itself stays in the thread that created it (the UI thread),
    so every signal, whether connected to a method or a lambda, is delivered there, queued.

    Exactly one of finished / failed / cancelled is emitted, then `done`.
    """

    progress = Signal(float, str)
    partial = Signal(object)
    finished = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    done = Signal()
    exception: BaseException | None = None  # what made the job fail, for callers that word it themselves

    # Progress is coalesced to this interval: a job reporting every few ms would flood the UI's event queue.
    PROGRESS_INTERVAL_S = 0.05

    def __init__(self, fn: JobFunction, name: str = "job", parent: QObject | None = None):
        super().__init__(parent)
        self.fn = fn
        self.name = name
        self.token = CancelToken()
        self.started_at = 0.0
        self._last_progress = 0.0
        self._running = False
        self._thread = _Runner(self, parent)
        self._thread.setObjectName(f"medad-{name}")

    @property
    def thread_finished(self):
        """The QThread's `finished` signal: the thread has really ended (after `done`)."""
        return self._thread.finished

    # ---------------------------------------------------------------------------------------------- UI thread
    def start(self) -> None:
        self.started_at = time.monotonic()
        self._running = True
        self._thread.start()

    def cancel(self) -> None:
        """Returns at once; the job stops at its next cancellation check and then emits `cancelled`."""
        self.token.cancel()

    @property
    def is_running(self) -> bool:
        return self._running or self._thread.isRunning()

    @property
    def is_cancelling(self) -> bool:
        return self.is_running and self.token.cancelled

    def wait(self, ms: int = 30_000) -> bool:
        """Block until the thread has ended (for shutdown and tests)."""
        return self._thread.wait(ms)

    def detach(self) -> None:
        """Let a cancelled job end on its own after its window has gone: no parent can delete the running thread,
        and a module-level reference keeps both alive until the thread has ended (see `wait_for_detached`)."""
        self.setParent(None)
        self._thread.setParent(None)
        _DETACHED.add(self)
        self._thread.finished.connect(lambda: _DETACHED.discard(self))
        if not self._thread.isRunning() and not self._running:
            _DETACHED.discard(self)

    # ------------------------------------------------------------------------------------------ worker thread
    def _progress(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_progress < self.PROGRESS_INTERVAL_S:
            return
        self._last_progress = now
        self.progress.emit(float(fraction), str(message))

    def _run(self) -> None:
        try:
            result = self.fn(self._progress, self.token, self.partial.emit)
        except Cancelled:
            self.cancelled.emit()
        except MemoryError:
            self.failed.emit(OUT_OF_MEMORY)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never a crash
            self.exception = exc
            if not _plain_words(exc):
                traceback.print_exc()
            self.failed.emit(_readable(exc))
        else:
            if self.token.cancelled:
                self.cancelled.emit()
            else:
                self.finished.emit(result)
        finally:
            self._running = False
            self.done.emit()


_DETACHED: set[Worker] = set()


def detached_jobs() -> int:
    return sum(1 for w in _DETACHED if w.is_running)


def wait_for_detached(timeout_s: float) -> bool:
    """At exit: give detached jobs up to `timeout_s` to reach their next cancellation check (a scoring job saves
    the slices it scored on the way out). False if one is still running (the caller then exits without waiting)."""
    deadline = time.monotonic() + timeout_s
    for w in list(_DETACHED):
        left = max(0, int((deadline - time.monotonic()) * 1000))
        if w.is_running and not w.wait(left):
            return False
    return True


OUT_OF_MEMORY = ("Out of memory: this computer could not give the job the memory it needed. Nothing was lost: "
                 "the earlier results and your review are kept. Close other programs, use fewer reference slices "
                 "or a smaller input size, or choose another device or backbone in Settings, then try again.")

# How the allocators say it: CPython, torch on the CPU, CUDA and Apple's MPS.
_OOM_MARKERS = ("out of memory", "can't allocate memory", "defaultcpuallocator", "cannot allocate memory",
                "mps backend out of memory", "failed to allocate")


def _plain_words(exc: BaseException) -> bool:
    """An error whose message is written for the user (the report package's ReportError and its kinds)."""
    return any(c.__name__ == "ReportError" for c in type(exc).__mro__)


def _readable(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    name = type(exc).__name__
    low = text.lower()
    if isinstance(exc, MemoryError) or any(m in low for m in _OOM_MARKERS):
        return f"{OUT_OF_MEMORY} ({text.splitlines()[0][:200]})"
    if name in ("ValueError", "WeightsUnavailable", "ReferenceUnavailable", "FileNotFoundError", "RuntimeError") \
            or _plain_words(exc):
        return text
    return f"{text} ({name})"
