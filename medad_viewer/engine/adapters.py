"""Residual bottleneck adapters and the heads that turn adapted features into anomaly maps.

MVFA-AD puts two adapters (one for the pixel map, one for the image score) at several depths of a frozen encoder
and blends their outputs back as 0.8·x + 0.1·seg + 0.1·det. Here each adapter is x + up(act(down(x))) with `up`
zero-initialised, so the blend — and so the whole network — is exactly the frozen backbone at initialisation.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

BLEND = (0.8, 0.1, 0.1)  # x, seg, det — MVFA-AD


class Bottleneck(nn.Module):
    """x + up(LeakyReLU(down(x))) on the last dimension; identity at initialisation."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.act = nn.LeakyReLU(0.1)
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x)))


class LevelAdapter(nn.Module):
    """Seg and det adapters for one level. Input and outputs are tokens (B, N, C)."""

    def __init__(self, dim: int, reduction: int = 4):
        super().__init__()
        hidden = max(8, dim // reduction)
        self.seg = Bottleneck(dim, hidden)
        self.det = Bottleneck(dim, hidden)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        seg, det = self.seg(x), self.det(x)
        blended = BLEND[0] * x + BLEND[1] * seg + BLEND[2] * det
        return blended, seg, det


class LinearHeads(nn.Module):
    """For a CNN backbone: per level a learned 1×1 map head on seg features and an image head on det features."""

    def __init__(self, dims: Sequence[int]):
        super().__init__()
        self.seg = nn.ModuleList(nn.Conv2d(d, 1, 1) for d in dims)
        self.det = nn.ModuleList(nn.Linear(d, 1) for d in dims)
        self.norms = nn.ModuleList(nn.GroupNorm(1, d, affine=False) for d in dims)

    def forward(self, seg: list[torch.Tensor], det: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        maps, img = [], []
        for i, (s, d) in enumerate(zip(seg, det)):
            maps.append(self.seg[i](self.norms[i](s)))  # (B, 1, h, w) logits
            # Image logit: the det head's logits per patch, top-pooled so one small lesion counts.
            pl = self.det[i](self.norms[i](d).flatten(2).transpose(1, 2)).squeeze(-1)  # (B, N)
            k = max(1, pl.shape[1] // 100)
            img.append(pl.topk(k, dim=1).values.mean(dim=1))
        return maps, torch.stack(img, dim=0).mean(dim=0)


class TextHeads(nn.Module):
    """For a CLIP backbone: patch features projected into the joint space and compared with the normal/abnormal
    text embeddings (pixel-wise visual-language alignment). The projection starts as the backbone's own (zero-shot);
    learnable context offsets on the two class embeddings play the part of MediCLIP/CoOp learnable prompt tokens."""

    def __init__(self, backbone, text_embeddings: torch.Tensor, learnable_prompts: bool = True,
                 temperature: float = 0.07):
        super().__init__()
        self.backbone = [backbone]  # not a submodule: its weights are frozen and saved elsewhere
        self.register_buffer("text", F.normalize(text_embeddings.float(), dim=-1))  # (2, D): normal, abnormal
        self.prompt_offset = nn.Parameter(torch.zeros_like(self.text)) if learnable_prompts else None
        n = len(backbone.level_dims)
        self.proj = nn.ModuleList(nn.Linear(backbone.text_dim, backbone.text_dim, bias=False) for _ in range(n))
        for p in self.proj:
            nn.init.eye_(p.weight)
        self.temperature = temperature

    def class_embeddings(self) -> torch.Tensor:
        t = self.text if self.prompt_offset is None else self.text + self.prompt_offset
        return F.normalize(t, dim=-1)

    def forward(self, seg: list[torch.Tensor], det: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        bb = self.backbone[0]
        text = self.class_embeddings()
        maps, img = [], []
        for i, (s, d) in enumerate(zip(seg, det)):
            for feats, sink in ((s, maps), (d, img)):
                z = bb.project_to_text_space(i, feats)  # (B, D, h, w)
                z = self.proj[i](z.flatten(2).transpose(1, 2))
                z = F.normalize(z, dim=-1)
                logits = z @ text.T / self.temperature  # (B, N, 2)
                anomaly_logit = logits[..., 1] - logits[..., 0]
                if sink is maps:
                    b, _, h, w = s.shape
                    sink.append(anomaly_logit.view(b, 1, h, w))
                else:
                    k = max(1, anomaly_logit.shape[1] // 100)
                    sink.append(anomaly_logit.topk(k, dim=1).values.mean(dim=1))
        return maps, torch.stack(img, dim=0).mean(dim=0)
