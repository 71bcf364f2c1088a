"""Reading a study's slices after the study is shown: the slices a reader needs first are read first, the rest fill
in behind them. No Qt.

`load_study(path, defer_pixels=True)` plans every single-frame DICOM series with a SeriesInstanceUID (files grouped,
ordered, geometry known; one without a UID is read at once: its uid is made from its pixels) and hands back a Study
whose `pending` SliceFill reads their pixels: `read_now` the few slices the first screen shows (in the calling
thread), `focus` the slice shown, then `run` in a background thread while the study is browsed; `Series.request(i)`
(a reader scrolling onto a slice not read yet) puts that slice first. Each series' pixels go into its one array, in
place: no second copy. Once `run` has returned, `finish` (in the thread that shows the study) makes the series
complete. A slice found unreadable only while filling in keeps its number, empty (zeros), with a warning: the slices
of a series being browsed may already carry review decisions, references and drawings by number. (Read at once,
without deferring, such a slice is left out, as it always was.) A series none of whose slices could be read is
dropped.

A reader (io/dicom.py's stack fill) has `series`, `num`, `claimed` / `done` / `loaded` (a bool per slice: taken by a
thread, read or failed, read), `read(index)` (never raises for a bad file: it records the failure) and `finish()`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ._util import ReadFailure
from .series import LoadError, Series

Report = Callable[[int, int], None]  # (slices done, slices in all)


def read_threads() -> int:
    """Reader threads for a fill: GDCM releases the GIL for part of each read, so a few threads read faster; on a
    small CPU one core is left to the window, which is browsed meanwhile (on 2 cores, one reader thread read 1,000
    slices as fast as two, and the window's event loop stalled less)."""
    import os

    from .dicom import READ_THREADS

    cores = os.cpu_count() or 1
    return max(1, min(READ_THREADS, cores - 1)) if cores <= 4 else READ_THREADS


class SliceFill:
    """Reads the slices of a study's series that are not read yet; see the module's docstring."""

    def __init__(self, readers: Iterable[Any]) -> None:
        self.readers = list(readers)
        self._lock = threading.Lock()
        self._asked: deque[tuple[Any, int]] = deque()
        self._wake = threading.Event()  # a slice asked for has arrived, or a reader thread has ended
        self._centre = {id(r): r.num // 2 for r in self.readers}
        self._order = list(self.readers)
        self.state = "idle"  # "running", then "read" (every slice done) or "stopped" (cancelled or failed)
        self.finished = False
        for r in self.readers:
            r.scheduler = self

    # ------------------------------------------------------------------------------------------------ state
    @property
    def series(self) -> list[Series]:
        return [r.series for r in self.readers]

    @property
    def total(self) -> int:
        return sum(r.num for r in self.readers)

    def done_count(self) -> int:
        return sum(int(np.count_nonzero(r.done)) for r in self.readers)

    @property
    def all_done(self) -> bool:
        return all(bool(r.done.all()) for r in self.readers)

    def _reader(self, series: Series) -> Any:
        for r in self.readers:
            if r.series is series:
                return r
        raise ValueError("that series is not read by this fill")

    # ------------------------------------------------------------------------------------------------ order
    def focus(self, series: Series, index: int) -> None:
        """The slice shown first: its series is read first, outward from `index` (index, +1, -1, +2, ...)."""
        r = self._reader(series)
        with self._lock:
            self._centre[id(r)] = int(index)
            self._order.remove(r)
            self._order.insert(0, r)

    def request(self, reader: Any, index: int) -> None:
        """`Series.request`: read slice `index` next, and go on outward from it (a reader scrolls on from there)."""
        with self._lock:
            self._asked.append((reader, int(index)))
            self._centre[id(reader)] = int(index)
            if self._order[0] is not reader:
                self._order.remove(reader)
                self._order.insert(0, reader)

    def _next(self) -> tuple[Any, int, bool] | None:
        """The next slice to read, claimed for the calling thread: (reader, index, asked for), or None when all are
        taken."""
        with self._lock:
            while self._asked:
                r, k = self._asked.pop()  # the latest request first: where the reader is now
                if not r.claimed[k]:
                    r.claimed[k] = True
                    return r, k, True
            for r in self._order:
                free = np.flatnonzero(~r.claimed)
                if free.size:
                    c = self._centre[id(r)]
                    # c, c+1, c-1, c+2, c-2, ...
                    k = int(free[np.argmin(2 * np.abs(free - c) - (free >= c))])
                    r.claimed[k] = True
                    return r, k, False
        return None

    # ------------------------------------------------------------------------------------------------ reading
    def read_now(self, series: Series, indices: Iterable[int]) -> None:
        """Read these slices of `series` in the calling thread (before the study is shown), unless already read."""
        r = self._reader(series)
        for k in indices:
            k = int(k)
            if not 0 <= k < r.num:
                continue
            with self._lock:
                if r.claimed[k]:
                    continue
                r.claimed[k] = True
            r.read(k)

    def run(self, cancel: Any = None, report: Report | None = None, threads: int | None = None,
            interval: float = 0.1) -> None:
        """Read every slice not read yet, in `threads` reader threads, until all are read; returns then. `report(done,
        total)` is called from the calling thread at most every `interval` s, at once when a slice asked for has
        arrived, and at the end. With a `cancel` token (io.cancel.CancelToken), raises Cancelled soon after it is
        set (the readers finish the slice they are on)."""
        threads = max(1, int(threads or read_threads()))
        self.state = "running"
        stop = threading.Event()
        failures: list[BaseException] = []

        def loop() -> None:
            try:
                while not stop.is_set() and not (cancel is not None and cancel.cancelled):
                    nxt = self._next()
                    if nxt is None:
                        return
                    r, k, asked = nxt
                    r.read(k)
                    if asked:
                        self._wake.set()
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                failures.append(exc)
                stop.set()
            finally:
                self._wake.set()

        workers = [threading.Thread(target=loop, name=f"medad-fill-{i}", daemon=True) for i in range(threads)]
        for w in workers:
            w.start()
        try:
            while any(w.is_alive() for w in workers):
                self._wake.wait(interval)  # woken early only when a slice asked for has arrived (or a reader ended)
                self._wake.clear()
                if report is not None:
                    report(self.done_count(), self.total)
        except BaseException:
            stop.set()
            raise
        finally:
            stop.set()
            for w in workers:
                w.join()
            self.state = "read" if self.all_done else "stopped"
        if failures:
            raise failures[0]
        if cancel is not None:
            cancel.raise_if_cancelled()
        if report is not None:
            report(self.done_count(), self.total)

    # ------------------------------------------------------------------------------------------------ the end
    def finish(self) -> tuple[dict[Series, Series | None], list[LoadError]]:
        """After `run`: every series complete. Returns {series: its replacement} for those that changed (slices
        that could not be read left out; None: none could be read) and the errors of the dropped ones."""
        if not self.all_done:
            raise RuntimeError("SliceFill.finish() before every slice was read")
        changes: dict[Series, Series | None] = {}
        errors: list[LoadError] = []
        for r in self.readers:
            try:
                new = r.finish()
            except ReadFailure as exc:
                new = None
                errors.append(LoadError(r.source, str(exc)))
            if new is not r.series:
                changes[r.series] = new
        self.finished = True
        return changes, errors


def wait_complete(series: Series, cancel: Any = None, report: Report | None = None, poll: float = 0.05) -> None:
    """Block until `series` is complete (every slice read, and the fill finished by the thread that shows the study):
    for a job that needs the whole series (Adapt & score), started while it fills in. `report(read, total)` as the
    slices arrive. ReadFailure when its fill stopped short (failed); Cancelled when `cancel` is set."""
    while not series.complete:
        if cancel is not None:
            cancel.raise_if_cancelled()
        pending = series._pending
        fill = getattr(pending, "scheduler", None) if pending is not None else None
        if fill is not None and fill.state == "stopped":
            raise ReadFailure("the series stopped loading before every slice was read; open it again")
        if report is not None:
            report(series.loaded_count(), series.num_slices)
        time.sleep(poll)


def apply_changes(series: list[Series], changes: dict[Series, Series | None]) -> list[Series]:
    """`series` with the replacements of `SliceFill.finish` made (and the dropped ones left out), in order."""
    out = []
    for s in series:
        new = changes.get(s, s)
        if new is not None:
            out.append(new)
    return out
