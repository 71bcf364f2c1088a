"""Stage 4 of the detector, the anomaly map: per-level outputs -> one map per component on the input grid ->
smoothed within the scoring region -> each component on the normal references' scale -> fused into one map.

Components: "bank" (patch distances to the memory bank), "head" (a CNN's learned head) and "text" (alignment with
the abnormal prompts); the heads give P(abnormal). Called by `detector`; uses only torch, numpy and OpenCV.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .foreground import region_box


def cells_touching(regions: torch.Tensor, grid: int, grow: int = 0) -> torch.Tensor:
    """(B, S, S) bool regions -> (B, grid, grid) bool: the patch cells that touch a region, grown by `grow` cells."""
    cells = F.adaptive_max_pool2d(regions.unsqueeze(1).float(), (grid, grid))
    if grow:
        cells = F.max_pool2d(cells, 2 * grow + 1, stride=1, padding=grow)
    return cells.squeeze(1) > 0


def combine_levels(maps: list[torch.Tensor], size: int) -> torch.Tensor:
    """Average per-level (B, h, w) or (B, 1, h, w) maps after bilinear upsampling to (B, size, size)."""
    acc = None
    for m in maps:
        if m.dim() == 3:
            m = m.unsqueeze(1)
        up = F.interpolate(m.float(), size=(size, size), mode="bilinear", align_corners=False)
        acc = up if acc is None else acc + up
    return (acc / len(maps)).squeeze(1)


def smooth_within(maps: torch.Tensor, regions: np.ndarray, sigma_px: float) -> np.ndarray:
    """(B, S, S) maps smoothed within (B, S, S) bool regions, as arrays: OpenCV on a CPU, torch elsewhere."""
    if maps.device.type == "cpu":
        return masked_blur_np(maps.numpy(), regions, sigma_px)
    return masked_blur(maps, torch.from_numpy(regions).to(maps.device), sigma_px).cpu().numpy()


def masked_blur(maps: torch.Tensor, masks: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """(B, H, W) smoothed within (B, H, W) bool masks by normalised convolution: G*(m·M) / G*M inside M, 0 outside.
    Values outside the mask (air, scalp) never leak into it, so the anatomy has no bright rim."""
    w = masks.to(maps.dtype)
    if sigma_px <= 0:
        return maps * w
    b = maps.shape[0]
    both = gaussian_blur(torch.cat([maps * w, w]), sigma_px)  # numerator and denominator in one pass
    num, den = both[:b], both[b:]
    return torch.where(masks, num / den.clamp_min(1e-6), torch.zeros_like(num))


def masked_blur_np(maps: np.ndarray, masks: np.ndarray, sigma_px: float) -> np.ndarray:
    """`masked_blur` for arrays on the CPU, with OpenCV's separable filter: the same kernel (radius 3 sigma) and
    border (reflect-101), several times faster than a single-channel torch convolution; on each mask's box
    (`region_box`: a reflected border then reflects zeros, as the whole image would have there)."""
    w = masks.astype(np.float32)
    if sigma_px <= 0:
        return (maps * w).astype(np.float32)
    out = np.zeros(maps.shape, np.float32)
    k = 2 * int(round(3 * sigma_px)) + 1
    for i in range(maps.shape[0]):
        box = region_box(masks[i], k // 2 + 1)
        if box is None:
            continue
        wi = w[i][box]
        num = cv2.GaussianBlur(np.ascontiguousarray(maps[i][box] * wi, np.float32), (k, k), sigma_px,
                               borderType=cv2.BORDER_REFLECT_101)
        den = cv2.GaussianBlur(wi, (k, k), sigma_px, borderType=cv2.BORDER_REFLECT_101)
        out[i][box] = np.where(masks[i][box], num / np.maximum(den, 1e-6), 0.0)
    return out


def guided_within(maps: np.ndarray, guides: np.ndarray, regions: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """(B, S, S) maps refined by the guided filter (He et al., TPAMI 2013) with the slices themselves as guides,
    inside each region only: locally the output is a linear function of the guide's intensity, so a map that is
    coarse (patch grid, upsampled) takes the slice's own edges, and a lesion's heat stops where the lesion does.
    Box means are normalised by the region, so outside pixels never count; the output stays within the range the
    map has inside its region (the linear model can overshoot at strong edges). Computed on each region's box
    (`region_box`), the same values: 0.85 against 0.55 ms a slice of the demo."""
    out = np.zeros(maps.shape, np.float32)
    k = (2 * radius + 1, 2 * radius + 1)
    for i in range(maps.shape[0]):
        box = region_box(regions[i], 0)  # box filters read zeros outside the region anyway
        if box is None:
            continue
        inside = regions[i][box].astype(bool)
        w = inside.astype(np.float32)
        n = cv2.boxFilter(w, -1, k, normalize=True, borderType=cv2.BORDER_CONSTANT)
        n = np.maximum(n, 1e-6)

        def mean(x: np.ndarray) -> np.ndarray:
            return cv2.boxFilter(np.ascontiguousarray(x * w, np.float32), -1, k, normalize=True,
                                 borderType=cv2.BORDER_CONSTANT) / n

        g = guides[i][box].astype(np.float32)
        m = maps[i][box].astype(np.float32)
        mg, mm = mean(g), mean(m)
        var = mean(g * g) - mg * mg
        cov = mean(g * m) - mg * mm
        a = cov / (var + eps)
        b = mm - a * mg
        refined = mean(a) * g + mean(b)
        refined = np.clip(refined, m[inside].min(), m[inside].max())
        out[i][box] = np.where(inside, refined, 0.0)
    return out


def gaussian_blur(maps: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """(B, H, W) smoothed with a separable Gaussian (reflect padding)."""
    if sigma_px <= 0:
        return maps
    radius = int(round(3 * sigma_px))
    xs = torch.arange(-radius, radius + 1, device=maps.device, dtype=torch.float32)
    k = torch.exp(-(xs ** 2) / (2 * sigma_px ** 2))
    k = (k / k.sum()).view(1, 1, 1, -1)
    x = maps.unsqueeze(1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.transpose(2, 3))
    return x.squeeze(1)


def fusion_weights(names: list[str], bank_weight: float) -> dict[str, float]:
    """Each component's weight in the fused map: the bank `bank_weight` against the heads' 1 - `bank_weight`; a
    component alone weighs 1."""
    w = bank_weight
    both = "bank" in names and len(names) > 1
    return {name: (w if name == "bank" else 1.0 - w) if both else 1.0 for name in names}


def fuse(comps: dict[str, np.ndarray], regions: np.ndarray, scales: dict[str, tuple[float, float]],
         bank_weight: float) -> np.ndarray:
    """Components on the normal references' scale, (v - median) / (p99 - median) from `scales` (fitted by the
    calibration stage; (0, 1) for a component without one), and fused: the bank weighs `bank_weight` against the
    heads' 1 - `bank_weight`. Inside the region the values keep their order (below 0 is closer to normal than the
    references' median: clamping there would tie a tenth of lesion pixels with the background); outside it the map
    holds the value of a perfect match, below anything inside."""
    weights = fusion_weights(list(comps), bank_weight)
    fused = None
    floor = 0.0
    for name, m in comps.items():
        med, scale = scales.get(name, (0.0, 1.0))
        part = weights[name] * (m - med) / scale
        fused = part if fused is None else fused + part
        floor += weights[name] * (0.0 - med) / scale  # every component is >= 0: distances, probabilities
    return np.where(regions, fused, min(floor, 0.0)).astype(np.float32)


def hyperintensity_gate(image: np.ndarray, region: np.ndarray, full_at: float, floor: float,
                        sigma_px: float = 1.0) -> np.ndarray:
    """(S, S) float32 factor for a map: 1 where `image` (lightly smoothed against noise) is at least `full_at`
    interquartile ranges above the median of its `region`, `floor` where it is no brighter than that median, linear
    between. All ones when the region is too small to have a median."""
    im = np.asarray(image, dtype=np.float32)
    if sigma_px > 0:
        im = cv2.GaussianBlur(im, (0, 0), sigma_px)
    vals = im[region]
    if vals.size < 16:
        return np.ones(im.shape, np.float32)
    q25, med, q75 = np.percentile(vals, [25, 50, 75])
    z = (im - med) / max(float(q75 - q25), 1e-3)
    return (floor + (1.0 - floor) * np.clip(z / full_at, 0.0, 1.0)).astype(np.float32)
