"""The anomaly model: a frozen backbone, optional adapters per level, and map/score heads."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .adapters import LevelAdapter, LinearHeads, TextHeads
from .backbones import Backbone


@dataclass
class LevelFeatures:
    seg: list[torch.Tensor]  # per used level (B, C, h, w): features for maps and the memory bank
    det: list[torch.Tensor]  # per used level (B, C, h, w): features for the image score


class AnomalyModel(nn.Module):
    """Backbone + adapters + heads. Only adapters and heads have trainable parameters."""

    def __init__(self, backbone: Backbone, levels: list[int], adapters: bool, heads: str | None,
                 text_embeddings: torch.Tensor | None = None, stream: bool | None = None,
                 learnable_prompts: bool = True, reduction: int = 4):
        super().__init__()
        self.backbone = backbone
        self.input_size = backbone.input_size  # the detector may choose a smaller one for CNNs
        self.levels = list(levels)
        dims = [backbone.level_dims[i] for i in self.levels]
        self.adapters = nn.ModuleList(LevelAdapter(d, reduction) for d in dims) if adapters else None
        # Feeding adapter outputs back into the network (MVFA-AD) needs a backward pass through the later layers;
        # CNNs here adapt their level outputs instead, which keeps CPU adaptation within its time budget.
        self.stream = bool(adapters and (backbone.supports_stream_adapters if stream is None else stream))
        if heads == "linear":
            self.heads: nn.Module | None = LinearHeads(dims)
        elif heads == "text":
            if text_embeddings is None:
                raise ValueError("text heads need text embeddings")
            sub = _LevelSubset(backbone, self.levels)
            self.heads = TextHeads(sub, text_embeddings, learnable_prompts=learnable_prompts)
        else:
            self.heads = None

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = []
        for part in (self.adapters, self.heads):
            if part is not None:
                params += [p for p in part.parameters() if p.requires_grad]
        return params

    def adapter_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    def features(self, x: torch.Tensor) -> LevelFeatures:
        """x: preprocessed (B, 3, S, S)."""
        if self.adapters is None or not self.stream:
            return self.adapt_levels(self.frozen_levels(x))
        # Adapters in the stream (MVFA-AD): they change what later levels see.
        det_store: dict[int, torch.Tensor] = {}
        index = {lvl: j for j, lvl in enumerate(self.levels)}

        def edit(level: int, tokens: torch.Tensor):
            if level not in index:
                return tokens, tokens
            blended, seg, det = self.adapters[index[level]](tokens)
            det_store[level] = det
            return blended, seg

        out = self.backbone(x, stream_edit=edit, upto=max(self.levels))
        seg = [out[i] for i in self.levels]
        det = [_tokens_to_map(det_store[i], seg[j].shape) for j, i in enumerate(self.levels)]
        return LevelFeatures(seg, det)

    @torch.no_grad()
    def frozen_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The used levels of the frozen backbone (no adapters); cacheable when adapters are not in the stream."""
        out = self.backbone(x, upto=max(self.levels))
        return [out[i] for i in self.levels]

    def adapt_levels(self, frozen: list[torch.Tensor]) -> LevelFeatures:
        """Adapters applied to frozen level outputs (the non-stream path)."""
        if self.adapters is None:
            return LevelFeatures(frozen, frozen)
        seg, det = [], []
        for j, f in enumerate(frozen):
            tokens = f.flatten(2).transpose(1, 2)
            _, s, d = self.adapters[j](tokens)
            seg.append(_tokens_to_map(s, f.shape))
            det.append(_tokens_to_map(d, f.shape))
        return LevelFeatures(seg, det)

    def head_logits(self, feats: LevelFeatures) -> tuple[list[torch.Tensor], torch.Tensor]:
        if self.heads is None:
            raise RuntimeError("this model has no heads")
        return self.heads(feats.seg, feats.det)


def _tokens_to_map(tokens: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    b, c, h, w = shape
    return tokens.transpose(1, 2).reshape(b, -1, h, w)


class _LevelSubset:
    """The backbone seen through the used levels only (heads index levels 0..n-1)."""

    def __init__(self, backbone: Backbone, levels: list[int]):
        self._bb = backbone
        self._levels = levels
        self.level_dims = [backbone.level_dims[i] for i in levels]
        self.text_dim = backbone.text_dim

    def project_to_text_space(self, level: int, feats: torch.Tensor) -> torch.Tensor:
        return self._bb.project_to_text_space(self._levels[level], feats)


def combine_levels(maps: list[torch.Tensor], size: int) -> torch.Tensor:
    """Average per-level (B, h, w) or (B, 1, h, w) maps after bilinear upsampling to (B, size, size)."""
    acc = None
    for m in maps:
        if m.dim() == 3:
            m = m.unsqueeze(1)
        up = F.interpolate(m.float(), size=(size, size), mode="bilinear", align_corners=False)
        acc = up if acc is None else acc + up
    return (acc / len(maps)).squeeze(1)


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
    border (reflect-101), several times faster than a single-channel torch convolution."""
    w = masks.astype(np.float32)
    if sigma_px <= 0:
        return (maps * w).astype(np.float32)
    out = np.zeros(maps.shape, np.float32)
    k = 2 * int(round(3 * sigma_px)) + 1
    for i in range(maps.shape[0]):
        num = cv2.GaussianBlur(np.ascontiguousarray(maps[i] * w[i], np.float32), (k, k), sigma_px,
                               borderType=cv2.BORDER_REFLECT_101)
        den = cv2.GaussianBlur(w[i], (k, k), sigma_px, borderType=cv2.BORDER_REFLECT_101)
        out[i] = np.where(masks[i], num / np.maximum(den, 1e-6), 0.0)
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
