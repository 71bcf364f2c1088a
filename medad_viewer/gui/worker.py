"""The one background worker for every long job (study loading, adaptation, scoring): a QThread running a plain
function, with its progress callbacks, partial results and outcome turned into Qt signals."""

from __future__ import annotations

import time
import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal

from ..engine.jobs import CancelToken, Cancelled

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
            self.failed.emit("Out of memory. Close other programs, score fewer slices, or choose a smaller backbone "
                             "or the CPU device in Settings.")
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never a crash
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


def _readable(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    name = type(exc).__name__
    low = text.lower()
    if "out of memory" in low or "cuda error: out of memory" in low:
        return ("The device ran out of memory. Choose the CPU device or a smaller backbone in Settings, "
                f"or close other programs. ({text.splitlines()[0]})")
    if name in ("ValueError", "WeightsUnavailable", "ReferenceUnavailable", "FileNotFoundError", "RuntimeError"):
        return text
    return f"{text} ({name})"
