"""review.references.resolve_series: which loaded series a reference slice is from (tray, scoring, report)."""

from __future__ import annotations

import numpy as np

from medad_viewer.io.series import Series, Study
from medad_viewer.review.references import ReferenceSlice, resolve_series


def _series(uid: str, description: str = "", aliases: tuple[str, ...] = (), shape=(3, 4, 5)) -> Series:
    return Series.from_array(np.zeros(shape, np.int16), uid=uid, description=description, aliases=aliases)


def _study(path: str, *series: Series) -> Study:
    return Study(list(series), [], path)


def test_uid_then_alias():
    a, b = _series("file:aaa", "T1"), _series("file:bbb", "T2", aliases=("file:old-path-uid",))
    studies = {"/s": _study("/s", a, b)}
    assert resolve_series(ReferenceSlice("/s", "file:bbb", 0), studies) is b
    assert resolve_series(ReferenceSlice("/s", "file:old-path-uid", 0), studies) is b  # a session of an older version
    # A uid matches in any loaded study (pixel uids survive a copy); the reference's own study comes first.
    moved = _series("file:bbb", "T2")
    assert resolve_series(ReferenceSlice("/gone", "file:bbb", 0), studies) is b
    both = {"/s": _study("/s", a, b), "/copy": _study("/copy", moved)}
    assert resolve_series(ReferenceSlice("/copy", "file:bbb", 0), both) is moved


def test_description_then_only_series():
    a, b = _series("file:aaa", "T1"), _series("file:bbb", "T2")
    studies = {"/s": _study("/s", a, b)}
    # The uid moved (a copy at another path): the one series of the same description.
    assert resolve_series(ReferenceSlice("/s", "file:other", 0, description="T2"), studies) is b
    assert resolve_series(ReferenceSlice("/s", "file:other", 0, description="FLAIR"), studies) is None
    assert resolve_series(ReferenceSlice("/s", "file:other", 0), studies) is None  # two series, nothing to go by
    twins = {"/s": _study("/s", _series("file:x", "T2"), _series("file:y", "T2"))}
    assert resolve_series(ReferenceSlice("/s", "file:other", 0, description="T2"), twins) is None
    only = _series("file:ccc", "scan.nii.gz")
    assert resolve_series(ReferenceSlice("/one", "file:other", 0, description="T2"), {"/one": _study("/one", only)}) \
        is only
    # Description and only-series fall-backs look in the reference's own study, never in another.
    assert resolve_series(ReferenceSlice("/elsewhere", "file:other", 0), {"/one": _study("/one", only)}) is None


def test_loads_the_source_once_and_only_when_needed():
    a = _series("file:aaa", "T1")
    calls = []

    def load(path: str) -> Study:
        calls.append(path)
        return _study(path, a)

    studies: dict[str, Study] = {}
    assert resolve_series(ReferenceSlice("/s", "file:aaa", 0), studies, load) is a
    assert resolve_series(ReferenceSlice("/s", "file:aaa", 1), studies, load) is a
    assert calls == ["/s"] and "/s" in studies  # kept for the next reference
    assert resolve_series(ReferenceSlice("/t", "file:aaa", 0), studies, load) is a  # found loaded: /t not read
    assert calls == ["/s"]
    assert resolve_series(ReferenceSlice("/u", "file:zzz", 0), {}) is None  # not loaded, no loader


def test_fits_narrows_every_step():
    small, big = _series("file:aaa", "T1", shape=(3, 4, 5)), _series("file:bbb", "T1", shape=(3, 8, 8))
    studies = {"/s": _study("/s", small, big)}

    def fits(s: Series) -> bool:
        return (s.rows, s.columns) == (8, 8)

    assert resolve_series(ReferenceSlice("/s", "file:aaa", 0), studies, fits=fits) is big  # uid of the wrong shape
    assert resolve_series(ReferenceSlice("/s", "file:zzz", 0, description="T1"), studies, fits=fits) is big
