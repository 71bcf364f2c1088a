"""Synthetic anomalies with exact pixel masks, and augmentation of normal reference slices.

Every generator takes a 2D float32 slice in [0, 1], its bool body mask and a numpy Generator, and
returns ``(image, mask)``: the mask is the region that visibly changed and nothing outside it moved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np

__all__ = [
    "ALL_KINDS",
    "MASK_TAU",
    "CHANGE_EPS",
    "SIZE_RANGE",
    "cutpaste",
    "gaussian_intensity",
    "local_deformation",
    "structure_gamma",
    "synthesize",
    "augment_normal",
]

ALL_KINDS: tuple[str, ...] = ("cutpaste", "gaussian_intensity", "local_deformation", "structure_gamma")

# A pixel belongs to the anomaly when its intensity moved by more than MASK_TAU (visible on a [0, 1]
# scale). Pixels whose proposed change stays below it are put back exactly, so the label and the
# image agree: outside the mask nothing changed at all.
MASK_TAU = 0.02
# Any change above this counts as "changed" for the label-quality guarantee below.
CHANGE_EPS = 1e-3
# At least this share of mask pixels must really have changed; otherwise the hole-filled region is
# dropped for the raw changed set (a filled label over untouched tissue would teach the wrong thing).
_MIN_CHANGED_SHARE = 0.8
# Semi-axis of an anomaly as a fraction of the body's bounding-box side (geometric mean of h, w).
SIZE_RANGE = (0.02, 0.15)
_MIN_AXIS_PX = 3.0
_ATTEMPTS = 6


# ---------------------------------------------------------------------------------------------
# shared helpers


def _prepare(img: np.ndarray, body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(img, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"expected a 2D slice, got shape {a.shape}")
    b = np.asarray(body, dtype=bool)
    if b.shape != a.shape:
        raise ValueError(f"body mask {b.shape} does not match image {a.shape}")
    if not b.any():
        # No body found (blank or odd slice): treat the whole slice as anatomy rather than fail
        # in the middle of a training batch.
        b = np.ones_like(b)
    return a, b


class _Layout:
    """Per-call geometry of the body: size scale and where anomaly centres may go."""

    def __init__(self, body: np.ndarray) -> None:
        self.body = body
        self.h, self.w = body.shape
        rows = np.flatnonzero(body.any(axis=1))
        cols = np.flatnonzero(body.any(axis=0))
        bh = rows[-1] - rows[0] + 1
        bw = cols[-1] - cols[0] + 1
        self.side = math.sqrt(float(bh) * float(bw))
        self._dist: np.ndarray | None = None

    def dist(self) -> np.ndarray:
        if self._dist is None:
            # Pad with background so the image border counts as the body's edge.
            padded = cv2.copyMakeBorder(self.body.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
            self._dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]
        return self._dist

    def sample_axes(self, rng: np.random.Generator,
                    scale: tuple[float, float] = SIZE_RANGE) -> tuple[float, float, float]:
        """(a, b, angle): semi-axes in pixels and orientation in radians."""
        a = rng.uniform(*scale) * self.side
        a = max(a, _MIN_AXIS_PX)
        b = max(a * rng.uniform(0.45, 1.0), _MIN_AXIS_PX)
        return a, b, rng.uniform(0.0, math.pi)

    def sample_centre(self, rng: np.random.Generator, radius: float) -> tuple[int, int]:
        """A body pixel, preferably at least half the anomaly's radius from the body's edge."""
        dist = self.dist()
        need = min(0.5 * radius, 0.5 * float(dist.max()))
        idx = np.flatnonzero(dist.ravel() >= max(need, 1.0))
        if idx.size == 0:
            idx = np.flatnonzero(self.body.ravel())
        k = int(idx[rng.integers(idx.size)])
        return k // self.w, k % self.w

    def irregular_patch(self, rng: np.random.Generator, irregularity: tuple[float, float],
                        feather: tuple[float, float]) -> "_Patch":
        """Where an irregular, feathered patch goes (cutpaste, structure_gamma): size, centre, crop box, blend
        weight (1 inside, tapering to 0 at the wobbled edge) and support (inside the edge and the body)."""
        a, b, ang = self.sample_axes(rng)
        irr = rng.uniform(*irregularity)
        cy, cx = self.sample_centre(rng, a)
        box = _box(self.h, self.w, cy, cx, a * (1 + irr))
        dy, dx = _offsets(box, cy, cx)
        rho = _irregular_rho(dy, dx, a, b, ang, rng, irr)
        weight = _taper(rho, rng.uniform(*feather))
        support = (rho < 1.0) & self.body[box[0]:box[1], box[2]:box[3]]
        return _Patch(a, cy, cx, box, weight, support)


class _Patch(NamedTuple):
    a: float  # semi-major axis, pixels
    cy: int
    cx: int
    box: tuple[int, int, int, int]  # y0, y1, x0, x1
    weight: np.ndarray
    support: np.ndarray


def _box(h: int, w: int, cy: int, cx: int, extent: float) -> tuple[int, int, int, int]:
    e = int(math.ceil(extent)) + 2
    return max(0, cy - e), min(h, cy + e + 1), max(0, cx - e), min(w, cx + e + 1)


def _offsets(box: tuple[int, int, int, int], cy: int, cx: int) -> tuple[np.ndarray, np.ndarray]:
    y0, y1, x0, x1 = box
    dy = (np.arange(y0, y1, dtype=np.float32) - cy)[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) - cx)[None, :]
    return dy, dx


def _ellipse_rho(dy: np.ndarray, dx: np.ndarray, a: float, b: float,
                 angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised elliptical radius (1 on the ellipse) and the rotated coordinates u, v (pixels)."""
    ca, sa = math.cos(angle), math.sin(angle)
    u = dx * ca + dy * sa
    v = dy * ca - dx * sa
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return rho.astype(np.float32), u, v


def _irregular_rho(dy: np.ndarray, dx: np.ndarray, a: float, b: float, angle: float,
                   rng: np.random.Generator, irregularity: float) -> np.ndarray:
    """Normalised radius of an ellipse whose boundary is wobbled by a few low angular harmonics."""
    rho, u, v = _ellipse_rho(dy, dx, a, b, angle)
    if irregularity <= 0:
        return rho
    theta = np.arctan2(v / b, u / a)
    wobble = np.ones_like(rho)
    harmonics = rng.integers(2, 6, size=3)
    amps = rng.dirichlet(np.ones(3)) * irregularity * rng.uniform(0.4, 1.0)
    phases = rng.uniform(0, 2 * math.pi, size=3)
    for k, amp, ph in zip(harmonics, amps, phases):
        wobble += amp * np.cos(k * theta + ph)
    return (rho / np.maximum(wobble, 0.3)).astype(np.float32)


def _taper(rho: np.ndarray, feather: float) -> np.ndarray:
    """1 inside, smoothstep down to exactly 0 at rho = 1 over the outer ``feather`` of the radius."""
    t = np.clip((1.0 - rho) / max(feather, 1e-3), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def _smooth_noise(shape: tuple[int, int], rng: np.random.Generator, cells: int = 5) -> np.ndarray:
    """Low-frequency noise in about [-1, 1] (a coarse random grid upsampled bicubically)."""
    h, w = shape
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    up = cv2.resize(grid, (max(w, 1), max(h, 1)), interpolation=cv2.INTER_CUBIC)
    return up / max(float(np.abs(up).max()), 1e-6)


def _headroom_sign(old: np.ndarray, weight: np.ndarray, sign: float, amp: float) -> float:
    """Keep ``sign`` unless clipping at 0 or 1 would swallow most of the change: a bright blob on
    saturated bone or a dark one in air does nothing visible, so it flips."""
    wsum = float(weight.sum())
    if wsum <= 0:
        return sign
    mean = float((old * weight).sum() / wsum)
    room = (1.0 - mean) if sign > 0 else mean
    if room < 0.5 * amp:
        return -sign
    return sign


def _commit(img: np.ndarray, box: tuple[int, int, int, int], proposal: np.ndarray,
            support: np.ndarray, min_fill: float = 0.0) -> tuple[np.ndarray, np.ndarray] | None:
    """Turn a proposed crop into (image, mask) with the label/image agreement guarantees.

    The mask is the visibly changed part of ``support`` (|change| > MASK_TAU), made a coherent
    region (specks dropped, small gaps closed, holes filled) as long as most of it really changed.
    Inside the mask the proposal is used as is; outside it the original pixels are kept exactly.
    Returns None when nothing visible changed or the mask covers less than ``min_fill`` of support.
    """
    y0, y1, x0, x1 = box
    old = img[y0:y1, x0:x1]
    prop = np.clip(proposal, 0.0, 1.0).astype(np.float32)
    diff = np.abs(prop - old)
    changed = (diff > MASK_TAU) & support
    n_changed = int(np.count_nonzero(changed))
    if n_changed < 4:
        return None
    # Specks of a few pixels (noise-level edges) make poor labels; they are put back unchanged.
    n, lab, stats, _ = cv2.connectedComponentsWithStats(changed.astype(np.uint8), connectivity=8)
    if n > 2:
        keep = np.zeros(n, bool)
        keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= 4
        changed = keep[lab]
        n_changed = int(np.count_nonzero(changed))
        if n_changed < 4:
            return None
    region = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_CLOSE,
                              cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))).astype(bool)
    region = _fill_holes(region) & support
    region |= changed
    moved = diff > CHANGE_EPS
    if np.count_nonzero(moved & region) < _MIN_CHANGED_SHARE * np.count_nonzero(region):
        region = changed
    if np.count_nonzero(region) < min_fill * np.count_nonzero(support):
        return None
    out = img.copy()
    out_crop = out[y0:y1, x0:x1]
    out_crop[region] = prop[region]
    mask = np.zeros(img.shape, np.float32)
    mask[y0:y1, x0:x1][region] = 1.0
    return out, mask


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = mask
    ff = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(padded, ff, (0, 0), 1)
    return mask | (padded[1:-1, 1:-1] == 0)


def _shift_toward_room(old: np.ndarray, weight: np.ndarray, rng: np.random.Generator,
                       low: float, high: float) -> float:
    """A signed intensity offset of magnitude in [low, high] pointing where there is room."""
    wsum = max(float(weight.sum()), 1e-6)
    mean = float((old * weight).sum() / wsum)
    sign = 1.0 if mean < 0.5 else -1.0
    return sign * rng.uniform(low, high)


def _as_result(res: tuple[np.ndarray, np.ndarray] | None, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if res is None:  # unreachable in practice: the last attempt forces a visible change
        return img.copy(), np.zeros(img.shape, np.float32)
    return res


# ---------------------------------------------------------------------------------------------
# anomaly kinds


def cutpaste(img: np.ndarray, body: np.ndarray, rng: np.random.Generator,
             donor: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Paste an irregular, feathered patch of tissue from elsewhere (in ``donor`` or this slice).

    The patch is taken around another body location, optionally rotated (up to 25 degrees) and
    contrast-scaled; when it looks too much like the tissue it covers it gets an intensity offset,
    so the label marks a visible foreign patch rather than noise.
    """
    img, body = _prepare(img, body)
    h, w = img.shape
    src = img
    if donor is not None:
        src = np.asarray(donor, dtype=np.float32)
        if src.shape != img.shape:
            src = cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA)
    lay = _Layout(body)
    res = None
    for attempt in range(_ATTEMPTS):
        force = attempt == _ATTEMPTS - 1
        a, cy, cx, box, alpha, support = lay.irregular_patch(rng, (0.0, 0.35), (0.15, 0.4))
        if not support.any():
            continue

        # Source centre: another body location, far enough that the patch is not the same tissue.
        sy, sx = cy, cx
        for _ in range(8):
            sy, sx = lay.sample_centre(rng, a)
            if donor is not None or math.hypot(sy - cy, sx - cx) > 1.5 * a:
                break
        theta = math.radians(rng.uniform(-25.0, 25.0))
        c, s = math.cos(theta), math.sin(theta)
        y0, y1, x0, x1 = box
        # Inverse map: crop pixel (x, y) -> source (R @ (x + x0 - cx, y + y0 - cy)) + (sx, sy).
        m = np.array([[c, -s, sx + c * (x0 - cx) - s * (y0 - cy)],
                      [s, c, sy + s * (x0 - cx) + c * (y0 - cy)]], np.float32)
        patch = cv2.warpAffine(src, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT_101)
        old = img[y0:y1, x0:x1]
        wsum = max(float(alpha.sum()), 1e-6)
        if rng.random() < 0.5:
            pm = float((patch * alpha).sum() / wsum)
            patch = (patch - pm) * rng.uniform(0.75, 1.3) + pm
        contrast = float((np.abs(patch - old) * alpha).sum() / wsum)
        if contrast < 0.06 or force:
            patch = patch + _shift_toward_room(old, alpha, rng, 0.08, 0.25)
        proposal = old + alpha * (patch - old)
        res = _commit(img, box, proposal, support, min_fill=0.0 if force else 0.3)
        if res is not None:
            break
    return _as_result(res, img)


def gaussian_intensity(img: np.ndarray, body: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Add a bright or dark anisotropic Gaussian blob (amplitude 0.1-0.5), sometimes textured.

    The blob's sigma is set so that its visible part (change > MASK_TAU) has the sampled size.
    """
    img, body = _prepare(img, body)
    h, w = img.shape
    lay = _Layout(body)
    res = None
    for attempt in range(_ATTEMPTS):
        force = attempt == _ATTEMPTS - 1
        a, b, ang = lay.sample_axes(rng)
        amp = rng.uniform(0.1, 0.5)
        sign = 1.0 if rng.random() < 0.5 else -1.0
        cy, cx = lay.sample_centre(rng, a)
        k = math.sqrt(2.0 * math.log(amp / MASK_TAU))  # visible radius / sigma
        box = _box(h, w, cy, cx, max(a, b))
        dy, dx = _offsets(box, cy, cx)
        _, u, v = _ellipse_rho(dy, dx, a, b, ang)
        g = np.exp(-0.5 * ((u * k / a) ** 2 + (v * k / b) ** 2)).astype(np.float32)
        if rng.random() < 0.5:
            g = g * (1.0 + rng.uniform(0.1, 0.4) * _smooth_noise(g.shape, rng))
        old = img[box[0]:box[1], box[2]:box[3]]
        sign = _headroom_sign(old, g, sign, amp)
        if force:
            sign = 1.0 if float((old * g).sum() / max(float(g.sum()), 1e-6)) < 0.5 else -1.0
            amp = max(amp, 0.3)
        proposal = old + sign * amp * g
        support = body[box[0]:box[1], box[2]:box[3]]
        res = _commit(img, box, proposal, support)
        if res is not None:
            break
    return _as_result(res, img)


def local_deformation(img: np.ndarray, body: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mass effect: push tissue out from (or pull it into) a centre with a smooth radial field.

    Half the time, or when the warp alone barely shows (homogeneous tissue), the core also gets an
    intensity change, like a lesion displacing its surroundings.
    """
    img, body = _prepare(img, body)
    h, w = img.shape
    lay = _Layout(body)
    lo, hi = SIZE_RANGE
    res = None
    for attempt in range(_ATTEMPTS):
        force = attempt == _ATTEMPTS - 1
        # A displacement needs room to show: use the upper part of the size range.
        a, b, ang = lay.sample_axes(rng, (max(lo, 0.05), hi * 1.2))
        cy, cx = lay.sample_centre(rng, a)
        box = _box(h, w, cy, cx, max(a, b))
        y0, y1, x0, x1 = box
        dy, dx = _offsets(box, cy, cx)
        rho, _, _ = _ellipse_rho(dy, dx, a, b, ang)
        f = np.where(rho < 1.0, (1.0 - rho * rho) ** 2, 0.0).astype(np.float32)
        strength = rng.uniform(0.25, 0.6)
        # Push-out samples closer to the centre (content expands); pull-in samples farther out.
        sgn = -1.0 if rng.random() < 0.5 else 1.0
        map_x = (np.arange(x1 - x0, dtype=np.float32)[None, :] + sgn * strength * f * dx).astype(np.float32)
        map_y = (np.arange(y1 - y0, dtype=np.float32)[:, None] + sgn * strength * f * dy).astype(np.float32)
        old = img[y0:y1, x0:x1]
        warped = cv2.remap(np.ascontiguousarray(old), map_x, map_y, interpolation=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT_101)
        support = (rho < 1.0) & body[y0:y1, x0:x1]
        if not support.any():
            continue
        weak = np.count_nonzero((np.abs(warped - old) > MASK_TAU) & support) < 0.3 * np.count_nonzero(support)
        if rng.random() < 0.5 or weak or force:
            core = np.exp(-0.5 * (rho / rng.uniform(0.3, 0.5)) ** 2).astype(np.float32) * (rho < 1.0)
            amp = rng.uniform(0.1, 0.3)
            sign = _headroom_sign(warped, core, 1.0 if rng.random() < 0.5 else -1.0, amp)
            warped = warped + sign * amp * core
        res = _commit(img, box, warped, support, min_fill=0.0 if force else 0.2)
        if res is not None:
            break
    return _as_result(res, img)


def structure_gamma(img: np.ndarray, body: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Structure-preserving change (PPAD-style): inside a smooth irregular region apply a gamma
    (0.4-0.8 or 1.25-2.5) or a contrast/brightness change; edges and anatomy stay where they are."""
    img, body = _prepare(img, body)
    lay = _Layout(body)
    res = None
    for attempt in range(_ATTEMPTS):
        force = attempt == _ATTEMPTS - 1
        patch = lay.irregular_patch(rng, (0.1, 0.4), (0.3, 0.6))
        box, weight, support = patch.box, patch.weight, patch.support
        y0, y1, x0, x1 = box
        if not support.any():
            continue
        old = img[y0:y1, x0:x1]
        if force:
            target = old + _shift_toward_room(old, weight, rng, 0.15, 0.3)
        elif rng.random() < 0.6:
            # Gammas near 1 change too little to see; sample away from it on a log scale.
            if rng.random() < 0.5:
                gamma = math.exp(rng.uniform(math.log(0.4), math.log(0.8)))
            else:
                gamma = math.exp(rng.uniform(math.log(1.25), math.log(2.5)))
            target = np.power(np.clip(old, 0.0, 1.0), gamma)
        else:
            wsum = max(float(weight.sum()), 1e-6)
            mean = float((old * weight).sum() / wsum)
            contrast = rng.uniform(0.5, 0.8) if rng.random() < 0.5 else rng.uniform(1.3, 1.8)
            target = (old - mean) * contrast + mean + rng.uniform(-0.15, 0.15)
        proposal = old + weight * (target - old)
        res = _commit(img, box, proposal, support, min_fill=0.0 if force else 0.3)
        if res is not None:
            break
    return _as_result(res, img)


_GENERATORS = {
    "gaussian_intensity": gaussian_intensity,
    "local_deformation": local_deformation,
    "structure_gamma": structure_gamma,
}


def synthesize(img: np.ndarray, body: np.ndarray, rng: np.random.Generator,
               kinds: Sequence[str] = ALL_KINDS,
               donors: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """One synthetic anomaly of a kind drawn uniformly from ``kinds``: ``(image, mask, kind)``.

    ``donors`` (other reference slices) feed ``cutpaste``; without them it pastes from this slice.
    """
    kinds = tuple(kinds)
    if not kinds:
        raise ValueError("no synthesis kinds given")
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if unknown:
        raise ValueError(f"unknown synthesis kinds {unknown}; known: {ALL_KINDS}")
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "cutpaste":
        donor = None
        if donors:
            donor = donors[int(rng.integers(len(donors)))]
        out, mask = cutpaste(img, body, rng, donor=donor)
    else:
        out, mask = _GENERATORS[kind](img, body, rng)
    return out, mask, kind


# ---------------------------------------------------------------------------------------------
# augmentation of normal references


def augment_normal(img: np.ndarray, body: np.ndarray, rng: np.random.Generator, hflip: bool = True,
                   rotate_deg: float = 10.0, shift_frac: float = 0.05,
                   intensity_jitter: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Random left-right flip, small rotation and shift (same transform on image and body), and a
    gamma/contrast jitter of up to +-``intensity_jitter``. Flags at 0/False switch each part off;
    all off returns copies of the inputs unchanged. Never flips vertically (anatomy is not
    up-down symmetric)."""
    out = np.asarray(img, dtype=np.float32).copy()
    bmask = np.asarray(body, dtype=bool).copy()
    if out.ndim != 2 or bmask.shape != out.shape:
        raise ValueError(f"expected a 2D slice and a body mask of the same shape, got {out.shape}, {bmask.shape}")
    h, w = out.shape
    touched = False

    if hflip and rng.random() < 0.5:
        touched = True
        out = np.ascontiguousarray(out[:, ::-1])
        bmask = np.ascontiguousarray(bmask[:, ::-1])

    angle = rng.uniform(-rotate_deg, rotate_deg) if rotate_deg > 0 else 0.0
    tx = rng.uniform(-shift_frac, shift_frac) * w if shift_frac > 0 else 0.0
    ty = rng.uniform(-shift_frac, shift_frac) * h if shift_frac > 0 else 0.0
    if angle != 0.0 or tx != 0.0 or ty != 0.0:
        touched = True
        m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
        m[0, 2] += tx
        m[1, 2] += ty
        # Fill what comes in from outside with the slice's own background level (air is 0 on CT/MR,
        # but an X-ray border may be grey).
        bg = float(np.median(out[~bmask])) if (~bmask).any() else 0.0
        out = cv2.warpAffine(out, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=bg)
        bmask = cv2.warpAffine(bmask.astype(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)

    if intensity_jitter > 0:
        touched = True
        gamma = 1.0 + rng.uniform(-intensity_jitter, intensity_jitter)
        contrast = 1.0 + rng.uniform(-intensity_jitter, intensity_jitter)
        out = np.power(np.clip(out, 0.0, 1.0), gamma)
        centre = float(out[bmask].mean()) if bmask.any() else float(out.mean())
        out = (out - centre) * contrast + centre
    if not touched:
        return out, bmask  # exact copy of the input
    return np.clip(out, 0.0, 1.0).astype(np.float32), bmask
