"""One slice's result, the one record type from the detector to the screen, the session and the report.

`SliceScore` holds the slice index, its raw image score, that score's percentile of normal and the anomaly map. The
detector gives the map at the slice's own size in float32; a store that keeps many (the window, a saved session)
keeps the compact form (`compacted`: float16, at most MAP_SIDE pixels a side), which gives the map back at the
slice's size each time `map` is read. No torch: the viewer imports it without the engine.
"""

from __future__ import annotations

import numpy as np

# Compact maps are kept at most this many pixels on a side, as float16. The detector computes them at its input
# size (260 px for EfficientNet-Lite2) and smooths them, so this loses nothing visible, and a 1,000-slice 512 x 512
# series holds 128 MB of maps instead of 1 GB: the maps never cost more than the series itself.
MAP_SIDE = 256


def compact_map(amap: np.ndarray, side: int = MAP_SIDE) -> np.ndarray:
    """`amap` shrunk (area average) to at most `side` pixels on its long side, as float16."""
    import cv2

    amap = np.asarray(amap, dtype=np.float32)
    h, w = amap.shape
    if max(h, w) > side:
        scale = side / max(h, w)
        amap = cv2.resize(amap, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return amap.astype(np.float16)


class SliceScore:
    """One slice's score and map.

    index: the slice in its series (or the image's position in what was scored); score: the raw image score;
    percentile: its percentile of normal, 0..100; map (read-only property): (rows, columns) float32 in units of
    the normal references' spread (0 = their median, 1 = their 99th percentile; below 0 closer to normal than
    typical; outside the scoring region a perfect match). `compact`: the array actually held; `shape`: the slice's.
    Built from a float16 array and a `shape`, the array is taken as the compact form."""

    __slots__ = ("index", "score", "percentile", "shape", "compact")

    def __init__(self, index: int, score: float, percentile: float, amap: np.ndarray,
                 shape: tuple[int, int] | None = None):
        self.index, self.score, self.percentile = int(index), float(score), float(percentile)
        amap = np.asarray(amap)
        self.shape = tuple(int(v) for v in (shape or amap.shape))
        self.compact = amap

    @property
    def is_compact(self) -> bool:
        return self.compact.dtype == np.float16

    @property
    def map(self) -> np.ndarray:
        m = self.compact
        if m.dtype != np.float32:
            m = m.astype(np.float32)
        if m.shape != self.shape:
            import cv2
            m = cv2.resize(m, (self.shape[1], self.shape[0]), interpolation=cv2.INTER_LINEAR)
        return m

    def compacted(self, side: int = MAP_SIDE) -> "SliceScore":
        """This record with its map kept compact (itself when it is already)."""
        if self.is_compact and max(self.compact.shape) <= side:
            return self
        return SliceScore(self.index, self.score, self.percentile, compact_map(self.map, side), self.shape)

    def with_score(self, score: float, percentile: float, index: int | None = None) -> "SliceScore":
        """The same map with another score (the through-plane step) or index."""
        return SliceScore(self.index if index is None else index, score, percentile, self.compact, self.shape)

    def __repr__(self) -> str:
        return f"SliceScore({self.index}, score={self.score:.3f}, percentile={self.percentile:.1f})"
