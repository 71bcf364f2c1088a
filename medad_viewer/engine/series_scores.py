"""Scoring whole series with a fitted detector (the scoring stage of `engine.pipeline`), and references named as
SOURCE[:SLICES] on the command line."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .detector import AnomalyDetector, pixels_hash, resolved_settings
from .jobs import CancelToken, no_progress
from .preprocess import IntensityNormalizer, normalizer_for_series
from .records import SliceScore
from .symmetry import midline, series_angle


def parse_slices(spec: str, num_slices: int) -> list[int]:
    """'0,3,7-9' -> [0, 3, 7, 8, 9]; negative indices count from the end; empty -> every slice."""
    if not spec.strip():
        return list(range(num_slices))
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            a, b = part.split("-", 1) if not part.startswith("-") else ("-" + part[1:].split("-", 1)[0],
                                                                      part[1:].split("-", 1)[1])
            lo, hi = int(a), int(b)
            lo, hi = (lo + num_slices if lo < 0 else lo), (hi + num_slices if hi < 0 else hi)
            if hi < lo:
                raise ValueError(f"slice range {part!r} runs backwards")
            out.extend(range(lo, hi + 1))
        else:
            i = int(part)
            out.append(i + num_slices if i < 0 else i)
    bad = [i for i in out if not 0 <= i < num_slices]
    if bad:
        raise ValueError(f"slice {bad[0]} is out of range: the series has {num_slices} slices (0-{num_slices - 1})")
    return sorted(dict.fromkeys(out))


def split_reference_spec(spec: str) -> tuple[str, str]:
    """'path/to/study:0,3,7-9' -> ('path/to/study', '0,3,7-9'). A Windows drive letter is not a separator."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail and all(c.isdigit() or c in ",- " for c in tail):
        return head, tail
    return spec, ""


@dataclass
class SeriesScores:
    results: dict[int, SliceScore] = field(default_factory=dict)
    seconds: float = 0.0
    midline_angle: float | None = None  # the volume's symmetry-axis angle its slices were scored with, if any

    def ranked(self) -> list[SliceScore]:
        return sorted(self.results.values(), key=lambda r: r.score, reverse=True)


def through_plane_neighbour(i: int, side: int, wanted: set[int], status: dict[int, str], gap: int
                            ) -> int | None | bool:
    """Slice `i`'s nearest scored neighbour on `side` (-1 below, +1 above) within `gap` slices among the `wanted`
    ones, skipping reference slices (they match themselves in the bank: their score says nothing of their
    neighbours): its index, None when there is none, False while a slice it depends on is not scored yet.
    `status`: "scored" or "reference" for each slice read so far."""
    for d in range(1, gap + 1):
        j = i + side * d
        if j not in wanted:
            continue
        st = status.get(j)
        if st is None:
            return False
        if st == "scored":
            return j
    return None


def through_plane_score(own: float, neighbours: Sequence[float]) -> float:
    """A slice's score capped by the higher of its neighbours' (`DetectorSettings.through_plane`): a slice keeps
    its height only where an adjacent slice reaches it too. Without neighbours, its own."""
    return min(own, max(neighbours)) if len(neighbours) else own


VOLUME_MIDLINE_SLICES = 9


def volume_midline_angle(detector: AnomalyDetector, series, normalizer: IntensityNormalizer | None = None
                         ) -> float | None:
    """The symmetry-axis angle that `detector` gives every slice of `series` (`DetectorSettings.volume_midline`), or
    None where each slice searches its own: not a volume, no slice's own mirror (radiographs), or no body on the
    slices sampled. The median of the angles found on 9 slices spread over 10-90 % of the volume (its first and
    last slices, skull base and vertex, are the least symmetric), each prepared as scoring prepares it; the same
    slices whichever of them are scored, so a slice's map does not depend on which others were asked for."""
    settings = resolved_settings(detector.settings, detector.kind)
    if not (settings.volume_midline and getattr(series, "is_volume", False) and detector.bank is not None
            and settings.self_mirror != "off"):
        return None
    n = int(series.num_slices)
    if n < 3:
        return None
    norm = normalizer or normalizer_for_series(series)
    picks = np.unique(np.linspace(0.1 * (n - 1), 0.9 * (n - 1), min(VOLUME_MIDLINE_SLICES, n)).round().astype(int))
    axes = []
    for i in picks:
        if hasattr(series, "is_loaded") and not series.is_loaded(int(i)):
            continue
        p = detector._prepare(norm(series.slice(int(i))))
        axes.append(midline(p.image, p.body))
    return series_angle(axes)


def score_series(detector: AnomalyDetector, series, indices: Sequence[int] | None = None,
                 normalizer: IntensityNormalizer | None = None, batch_size: int = 8,
                 progress: Callable[[float, str], None] = no_progress, cancel: CancelToken | None = None,
                 on_result: Callable[[SliceScore], None] | None = None, keep: bool = True) -> SeriesScores:
    """Score slices of a series batch by batch, reading each slice only when its batch comes up.
    Results already delivered through `on_result` stay valid when the job is cancelled. keep=False: results go only
    to `on_result` (a caller keeping its own copy need not hold every full-size map twice).

    On a volume whose detector settles `through_plane` to "neighbours", a slice's score is capped by its neighbours'
    (`through_plane_score`), so each slice is delivered once its neighbours are scored too: one batch later at most.
    A cancelled run delivers the slices it holds with the neighbours scored so far."""
    cancel = cancel or CancelToken()
    norm = normalizer or normalizer_for_series(series)
    idx = list(range(series.num_slices)) if indices is None else list(indices)
    settings = resolved_settings(detector.settings, detector.kind)
    through = settings.through_plane == "neighbours" and getattr(series, "is_volume", False)
    gap = max(1, int(settings.through_plane_gap))
    wanted = set(idx)
    ref_hashes = set(getattr(detector, "reference_hashes", ()) or ())
    out = SeriesScores()
    status: dict[int, str] = {}  # "scored" or "reference", as each slice is read
    own: dict[int, float] = {}  # every scored slice's own image score
    held: dict[int, SliceScore] = {}  # scored, waiting for a neighbour
    done = 0
    t0 = time.monotonic()
    out.midline_angle = angle = volume_midline_angle(detector, series, norm)

    def deliver(i: int, r: SliceScore, score: float, percentile: float) -> None:
        s = r.with_score(score, percentile, index=i)
        if keep:
            out.results[i] = s
        if on_result is not None:
            on_result(s)

    def release(final: bool) -> None:
        for i in list(held):
            nb = [through_plane_neighbour(i, side, wanted, status, gap) for side in (-1, 1)]
            if not final and any(j is False for j in nb):
                continue
            r = held.pop(i)
            score = through_plane_score(r.score, [own[j] for j in nb if j is not None and j is not False])
            deliver(i, r, score, r.percentile if score == r.score else detector.percentile_of(score))

    try:
        for start in range(0, len(idx), batch_size):
            cancel.raise_if_cancelled()
            chunk = idx[start: start + batch_size]
            imgs = [norm(series.slice(i)) for i in chunk]
            scored: list[SliceScore] = detector.score(imgs, batch_size=batch_size, cancel=cancel, midline_angle=angle)
            for i, img, r in zip(chunk, imgs, scored):
                done += 1
                if not through:
                    deliver(i, r, r.score, r.percentile)
                elif ref_hashes and pixels_hash(img) in ref_hashes:
                    status[i] = "reference"  # its own score, and no neighbour's evidence
                    deliver(i, r, r.score, r.percentile)
                else:
                    status[i] = "scored"
                    own[i] = r.score
                    held[i] = r
            if through:
                release(final=False)
            progress(done / len(idx), f"Scored {done} of {len(idx)} slices")
    finally:
        if through:
            release(final=True)
    out.seconds = time.monotonic() - t0
    return out
