"""Body / foreground masks for windowed 2D slices: the anatomy without air, CT table or X-ray borders.

Pure numpy + OpenCV; no Qt. Used to place synthetic anomalies and to ignore background in score maps.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["anatomy_mask", "body_mask", "body_mask_volume", "fill_holes", "head_interior", "region_box"]

# Below this robust dynamic range the slice is treated as empty (constant or numerically flat).
_MIN_RANGE = 1e-4


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the background regions of a bool mask that do not touch the image border."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    # Pad so that the flood fill from one corner reaches every border-connected background pixel.
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = mask
    flood = padded.copy()
    ff_mask = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(flood, ff_mask, (0, 0), 1)
    holes = flood[1:-1, 1:-1] == 0
    return mask | holes


def _ellipse(radius: int) -> np.ndarray:
    size = 2 * radius + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def body_mask(img: np.ndarray, min_component_frac: float = 0.01, threshold: float | None = None) -> np.ndarray:
    """Boolean mask of the patient's body in a 2D slice windowed to [0, 1].

    Thresholds at half the Otsu level (low enough to keep dark anatomy such as X-ray lung fields and
    MR skull), fills holes (CT lungs, MR skull), opens to detach thin structures (CT table, blankets,
    text markers), keeps components above ``min_component_frac`` of the image area (the largest is
    always kept), then fills holes again and closes slightly to smooth the outline.
    ``threshold`` overrides the automatic level (same [0, 1] units as ``img``).
    """
    a = np.asarray(img, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"body_mask expects a 2D slice, got shape {a.shape}")
    h, w = a.shape
    empty = np.zeros((h, w), dtype=bool)
    if a.size == 0:
        return empty
    if not np.isfinite(a).all():  # a check costs a fifth of the copy
        a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0)
    lo, hi = float(a.min()), float(a.max())
    if hi - lo < _MIN_RANGE:
        return empty

    # Otsu on 8 bits over the actual range: cheap and good enough for a two-class split.
    u8 = ((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    if threshold is None:
        otsu, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        # Otsu splits bright tissue from everything else; half of it still sits well above air /
        # MR background noise but keeps dark tissue (lungs on X-ray, fat, bone on MR) in the body.
        level = max(1.0, 0.5 * otsu)
    else:
        level = (float(threshold) - lo) * 255.0 / (hi - lo)
    fg = u8 > level
    if not fg.any():
        return empty

    # Filling first makes the body a solid blob so the opening cannot eat thin body walls or the
    # MR scalp ring, while it still removes thin unenclosed things like the table or blanket folds.
    radius = max(1, int(round(min(h, w) / 64)))
    # A closing first bridges small gaps in the outline (thin skin over fat in a narrow CT window,
    # MR scalp with signal drop-out) so the hole filling sees a closed body.
    fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_CLOSE, _ellipse(radius)).astype(bool)
    fg = fill_holes(fg)
    opened = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, _ellipse(radius))

    n, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if n <= 1:
        return empty
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(areas)[::-1]
    min_area = min_component_frac * h * w
    keep = [int(order[0]) + 1] + [int(i) + 1 for i in order[1:] if areas[i] >= min_area]
    if len(keep) == 1:  # the usual case: one body (a comparison, not a lookup)
        mask = (labels == keep[0]).astype(np.uint8)
    else:
        lut = np.zeros(n, np.uint8)
        lut[keep] = 1
        mask = lut[labels]

    close_r = max(1, radius // 2)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _ellipse(close_r))
    return fill_holes(mask.astype(bool))


def body_mask_volume(vol: np.ndarray, **kwargs) -> np.ndarray:
    """Slice-wise ``body_mask`` over a (Z, H, W) volume windowed to [0, 1]."""
    v = np.asarray(vol)
    if v.ndim != 3:
        raise ValueError(f"body_mask_volume expects (Z, H, W), got shape {v.shape}")
    out = np.zeros(v.shape, dtype=bool)
    for z in range(v.shape[0]):
        out[z] = body_mask(v[z], **kwargs)
    return out


# ------------------------------------------------------------------------------------------------------------------
# The inside of the skull on head MR

def _windowed(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per ray, p at lo, lo + 1, ... (as many as the widest window [lo, hi] holds): (values, inside [lo, hi],
    indices), each (rays, span). The windows are a few dozen samples of rays of a few hundred: reading only them
    took a third of the time of masking whole rays."""
    span = max(int((hi - lo).max()) + 1, 1)
    idx = lo[:, None] + np.arange(span)[None, :]
    return p[np.arange(p.shape[0])[:, None], np.minimum(idx, p.shape[1] - 1)], idx <= hi[:, None], idx


def _arg_in(p: np.ndarray, lo: np.ndarray, hi: np.ndarray, largest: bool) -> np.ndarray:
    """Per ray, the index of the largest (or smallest) value of p within [lo, hi]; the first such index, as argmax
    (0 where the window is empty, as argmax of nothing but the fill)."""
    vals, inside, _ = _windowed(p, lo, hi)
    q = np.where(inside, vals, -np.inf if largest else np.inf)
    k = q.argmax(1) if largest else q.argmin(1)
    return np.where(hi >= lo, lo + k, 0)


def _last_at_least(p: np.ndarray, lo: np.ndarray, hi: np.ndarray, level: float) -> np.ndarray:
    """Per ray, the largest index in [lo, hi] where p >= level, or -1."""
    vals, inside, idx = _windowed(p, lo, hi)
    return np.where(inside & (vals >= level), idx, -1).max(1)


def _ray_brain_edges(prof: np.ndarray, e: np.ndarray, med: float, scalp_depth: int, valley_depth: int,
                     csf_max: int, total_depth: int) -> np.ndarray:
    """Along each ray's intensity profile (centre at index 0, body edge at `e`): the radius where the brain begins
    inside the skull, or -1 where the ray shows no scalp-skull-brain sequence (all rays at once).

    From the edge inward: the scalp is the outermost bright layer (fat is brighter than brain on T1, T2 and FLAIR);
    the skull is the dark valley inside it (cortical bone has no MR signal); the brain begins where the profile
    recovers to tissue level. A second bright layer followed by a second valley (marrow between the two tables of a
    thick skull) moves the edge inward, twice at most and within `total_depth` of the surface."""
    rows = np.arange(prof.shape[0])
    ok = e >= 10
    pk = _arg_in(prof, np.maximum(e - scalp_depth, 0), e, largest=True)
    ppk = prof[rows, pk]
    ok &= ppk >= 1.15 * med
    v = _arg_in(prof, np.maximum(pk - valley_depth, 0), pk, largest=False)
    pv = prof[rows, v]
    ok &= (pv <= 0.8 * med) & (pv <= 0.5 * ppk)
    j = _last_at_least(prof, np.maximum(v - csf_max, 0), v, 0.75 * med)
    ok &= j >= 0
    floor = np.maximum(e - total_depth, 0)
    for _ in range(2):
        lo = np.maximum(np.maximum(j - valley_depth, 0), floor)
        go = ok & (j - lo >= 3)
        pk2 = _arg_in(prof, lo, j, largest=True)
        ppk2 = prof[rows, pk2]
        go &= ppk2 >= 1.1 * med
        v2 = _arg_in(prof, np.maximum(np.maximum(pk2 - valley_depth, 0), floor), pk2, largest=False)
        pv2 = prof[rows, v2]
        go &= (pv2 <= 0.8 * med) & (pv2 <= 0.7 * ppk2)
        j2 = _last_at_least(prof, np.maximum(v2 - csf_max, 0), v2, 0.75 * med)
        go &= j2 >= 0
        j = np.where(go, j2, j)
    return np.where(ok, j, -1)


def head_interior(img: np.ndarray, body: np.ndarray | None = None, n_rays: int = 180,
                  min_share: float = 0.5, partial_share: float = 0.3) -> np.ndarray | None:
    """The inside of the skull on an axial head MR slice windowed to [0, 1], or None when the slice shows no skull
    (a skull-stripped brain, a slice of another body part, a head CT — bone is bright there — or the vertex,
    where the skull is cut obliquely).

    Rays from the body's centroid; on each, `_ray_brain_edges` looks for scalp, skull and brain from the surface
    inward. When at least `min_share` of the rays see that sequence, the brain outline is their edge radii, gaps
    interpolated around the circle, median-filtered (so a stray vessel or sulcus moves it by nothing), filled.
    When fewer rays but at least `partial_share` see it (the vertex, the skull base, where the skull is cut
    obliquely or hidden by the face), every ray's edge is the surface moved inward by the scalp-and-skull depth those
    rays measured. Scalp, skull, orbits and most of the sinuses fall outside."""
    a = np.asarray(img, dtype=np.float32)
    if body is None:
        body = body_mask(a)
    area = int(body.sum())
    if area < 200:
        return None
    h, w = a.shape
    diam = 2.0 * np.sqrt(area / np.pi)
    sm = cv2.GaussianBlur(a, (0, 0), 1.0)
    med = median_of(sm[body])
    if med <= 1e-3:
        return None
    # The body's centroid and bounding box from its moments (the same values as from np.nonzero, a fifth the time)
    b8 = body.view(np.uint8) if body.dtype == bool else body.astype(np.uint8)
    mom = cv2.moments(b8, binaryImage=True)
    cy, cx = mom["m01"] / mom["m00"], mom["m10"] / mom["m00"]
    x0, y0, bw, bh = cv2.boundingRect(b8)
    # Rays need to reach just past the body: its farthest bounding-box corner from the centre.
    radius = int(np.ceil(np.hypot(max(cy - y0, y0 + bh - 1 - cy), max(cx - x0, x0 + bw - 1 - cx)))) + 3
    rs = np.arange(radius, dtype=np.float32)
    theta = np.linspace(0.0, 2.0 * np.pi, n_rays, endpoint=False)
    px = cx + np.cos(theta)[:, None] * rs[None]
    py = cy + np.sin(theta)[:, None] * rs[None]
    within = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
    pxi = np.clip(np.round(px).astype(int), 0, w - 1)
    pyi = np.clip(np.round(py).astype(int), 0, h - 1)
    prof = sm[pyi, pxi]
    inside = body[pyi, pxi] & within
    depth = {"scalp_depth": max(3, int(round(0.08 * diam))), "valley_depth": max(3, int(round(0.10 * diam))),
             "csf_max": max(3, int(round(0.08 * diam))), "total_depth": max(6, int(round(0.16 * diam)))}
    # The body's edge on each ray: the last sample before the ray first leaves the body.
    leaves = ~inside
    e = np.where(leaves.any(1), leaves.argmax(1), radius) - 1
    surface = np.maximum(e, 0)
    edge = _ray_brain_edges(prof, e, med, **depth)
    ok = edge >= 0
    if ok.mean() < partial_share:
        return None
    if ok.mean() < min_share:
        edge = np.maximum(surface - int(np.median(surface[ok] - edge[ok])), 0)
        ok = np.ones(n_rays, bool)
    idx = np.arange(n_rays)
    r = np.interp(idx, np.concatenate([idx[ok] - n_rays, idx[ok], idx[ok] + n_rays]),
                  np.tile(edge[ok], 3).astype(np.float64))
    k = 8  # circular median over 17 rays (34 degrees), then a 5-ray mean
    ext = np.concatenate([r[-k:], r, r[:k]])
    r = np.sort(np.lib.stride_tricks.sliding_window_view(ext, 2 * k + 1), axis=1)[:, k]  # the median of 2k + 1
    r = np.convolve(np.concatenate([r[-2:], r, r[:2]]), np.ones(5) / 5, mode="valid")
    pts = np.stack([cx + np.cos(theta) * r, cy + np.sin(theta) * r], 1).round().astype(np.int32)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [pts], 1)
    mask = mask.astype(bool) & body
    return mask if mask.sum() >= 0.15 * area else None


# Modalities where bone is bright or no skull is imaged: the search for a dark skull ring is not made there (a CT's fat
# layer under the skin, an X-ray's lung fields would look like one).
NO_SKULL_SEARCH = frozenset({"CT", "CR", "DX", "MG", "XA", "RF", "US", "NM", "PT", "IO", "PX"})


def anatomy_mask(img: np.ndarray, body: np.ndarray | None = None, modality: str = "OT") -> np.ndarray:
    """Where anomalies are looked for: the inside of the skull on head MR (scalp, skull, orbits and sinuses vary
    between people far more than the brain does, and are not what the reader asked about), else the body.
    MR and plain images of unknown modality are searched for a skull."""
    a = np.asarray(img, dtype=np.float32)
    if body is None:
        body = body_mask(a)
    if (modality or "OT").upper() in NO_SKULL_SEARCH:
        return body
    inner = head_interior(a, body)
    return body if inner is None else inner


def region_box(mask: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    """The bounding box of a 2D bool `mask` grown by `margin` pixels (within the image), as slices; None when empty.
    Filters of radius <= `margin` whose inputs are zero outside the mask give the same values inside it on this box
    as on the whole image (the map outside the scoring region is never read), at a fraction of the pixels."""
    x, y, w, h = cv2.boundingRect(np.ascontiguousarray(mask, dtype=np.uint8))
    if w == 0 or h == 0:
        return None
    return (slice(max(y - margin, 0), min(y + h + margin, mask.shape[0])),
            slice(max(x - margin, 0), min(x + w + margin, mask.shape[1])))


def median_of(v: np.ndarray, bins: int = 1024) -> float:
    """np.median of a 1-D array of values in [0, 1] (float32), the same value at about a third of the time on a
    slice's tens of thousands of pixels: a histogram finds the bins that hold the middle values, and only their
    values are put in order. Values outside [0, 1] or not finite: np.median itself."""
    v = np.asarray(v)
    n = v.size
    if n == 0 or v.dtype != np.float32:
        return float(np.median(v))
    if not (v.min() >= 0 and v.max() <= 1):  # outside [0, 1], or NaN
        return float(np.median(v))
    b = (v * np.float32(bins)).astype(np.int64)  # exact and in order: a power of two
    cum = np.cumsum(np.bincount(b, minlength=bins + 1))
    mids = sorted({(n - 1) // 2, n // 2})  # the ranks of the middle values (one when n is odd)
    out = []
    for r in mids:
        k = int(np.searchsorted(cum, r, side="right"))  # the bin holding rank r
        below = int(cum[k - 1]) if k else 0
        out.append(np.partition(v[b == k], r - below)[r - below])
    if len(out) == 1:
        return float(out[0])
    return float(np.mean(np.array(out, dtype=np.float32)))
