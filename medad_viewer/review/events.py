"""Typed events of the app's Qt-free models, after napari's EmitterGroup: each model has an `events` group with one
emitter per kind of change, each emitting one frozen dataclass. A listener connects to the emitters it cares about
(`model.events.slice.connect(fn)`, `fn(SliceShown(index=12))`), so what a change carries is written once, here, and a
misspelt event is an AttributeError at connection time rather than a handler that never runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

E = TypeVar("E")


class Emitter(Generic[E]):
    """One kind of event: each listener connected gets every event emitted, in the order they connected."""

    def __init__(self, name: str, kind: type):
        self.name, self.kind = name, kind
        self._listeners: list[Callable[[E], Any]] = []

    def connect(self, fn: Callable[[E], Any]) -> Callable[[E], Any]:
        self._listeners.append(fn)
        return fn

    def disconnect(self, fn: Callable[[E], Any]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def emit(self, event: E) -> None:
        if not isinstance(event, self.kind):
            raise TypeError(f"{self.name} emits {self.kind.__name__}, not {type(event).__name__}")
        for fn in list(self._listeners):
            fn(event)


class EmitterGroup:
    """A model's emitters by name (`group.slice`, `group.window`…); `connect_all` hears every one of them (logs,
    tests)."""

    def __init__(self, **kinds: type):
        self._emitters = {name: Emitter(name, kind) for name, kind in kinds.items()}
        for name, emitter in self._emitters.items():
            setattr(self, name, emitter)

    def __iter__(self):
        return iter(self._emitters.values())

    def connect_all(self, fn: Callable[[Any], Any]) -> None:
        for emitter in self._emitters.values():
            emitter.connect(fn)


# ---------------------------------------------------------------------------------------------- study, navigation
@dataclass(frozen=True)
class StudyOpened:
    load: dict  # what the load job read (gui/background_jobs.load_study_job): study, path, store, session, scores


@dataclass(frozen=True)
class StudyChanged:
    """The study's series or their warnings changed after it was shown (slices that could not be read)."""
    study: Any


@dataclass(frozen=True)
class LoadingProgress:
    done: int  # slices read
    total: int  # ... in all


@dataclass(frozen=True)
class Loaded:
    """Every slice of the open study is read."""


@dataclass(frozen=True)
class SeriesShown:
    series: Any


@dataclass(frozen=True)
class SliceShown:
    index: int  # of the acquired series


@dataclass(frozen=True)
class PlaneChanged:
    plane: str  # "axial" | "coronal" | "sagittal"


@dataclass(frozen=True)
class LayoutChanged:
    layout: str  # "1x1" | "1x3"


@dataclass(frozen=True)
class CrosshairMoved:
    index: int  # the acquired voxel every plane passes through
    row: int
    column: int


# ---------------------------------------------------------------------------------------------------- display
@dataclass(frozen=True)
class WindowChanged:
    centre: float
    width: float
    name: str


@dataclass(frozen=True)
class DisplayChanged:
    display: Any  # viewer.Display: inversion, flips, rotation, cine


# -------------------------------------------------------------------------------------------- references, review
@dataclass(frozen=True)
class ReferencesChanged:
    pass


@dataclass(frozen=True)
class ReviewChanged:
    key: tuple  # (series uid, slice index)


@dataclass(frozen=True)
class MeasurementsChanged:
    measurement: Any  # the Measurement added or removed


@dataclass(frozen=True)
class Said:
    """A hint for the user."""
    text: str


# ---------------------------------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class ScoresReplaced:
    series_uid: str


@dataclass(frozen=True)
class SliceScored:
    result: Any  # engine.records.SliceScore, compact


@dataclass(frozen=True)
class ScoringChanged:
    run: Any  # viewer.ScoringRun


@dataclass(frozen=True)
class DeviceNamed:
    text: str  # which device the job runs on, in words


# What the scoring job reports on its way (`ViewerModel.job_partial`), besides SliceScored and DeviceNamed:
@dataclass(frozen=True)
class DetectorReady:
    info: dict  # the fitted detector's description (AnomalyDetector.describe() and the adaptation key)


@dataclass(frozen=True)
class ScoresNotSaved:
    message: str  # in plain words: the scores stay in memory and go with the next save


# ----------------------------------------------------------------------------------------------------- saving
@dataclass(frozen=True)
class SaveDue:
    delay_s: float  # a save should follow within this many seconds


@dataclass(frozen=True)
class SaveProblem:
    message: str | None  # None: all is saved again
