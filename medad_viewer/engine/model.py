"""Stages 2 and 3 of the detector, the model: a frozen backbone's level features, adapters on them, and heads.

Called by `detector` (`features`, then `head_logits`) and trained by `adapt`; it never calls either. `features`
gives per level the seg features (for maps and the memory bank) and det features (for the heads' image score): the
frozen levels (`frozen_levels`) through the adapters (`adapt_levels`), or, for backbones that support it (ViTs), the
adapters inside the backbone's stream. The heads (`head_logits`) turn adapted features into per-level abnormal-minus-
normal logits: a learned 1x1 head for CNNs, alignment with normal/abnormal prompt embeddings (`class_text_embeddings`)
for vision-language backbones. Only the adapters and heads have trainable parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .adapters import LevelAdapter, LinearHeads, TextHeads
from .backbones import Backbone
from .prompts import build_prompts, default_organ


@dataclass
class LevelFeatures:
    seg: list[torch.Tensor]  # per used level (B, C, h, w): features for maps and the memory bank
    det: list[torch.Tensor]  # per used level (B, C, h, w): features for the image score


def class_text_embeddings(backbone: Backbone, modality: str, organ: str | None = None) -> torch.Tensor:
    """(2, D) for the text heads: the mean embedding of the normal prompts and of the abnormal prompts for this
    modality and organ (the modality's usual organ when None)."""
    prompts = build_prompts(modality, organ or default_organ(modality))
    return torch.stack([backbone.encode_text(prompts.normal).mean(0), backbone.encode_text(prompts.abnormal).mean(0)])


class AnomalyModel(nn.Module):
    """Backbone + adapters + heads. Only adapters and heads have trainable parameters.

    heads: None, "linear" (CNNs) or "text" (vision-language backbones; needs `text_embeddings`, see
    `class_text_embeddings`). input_size: the side of the inputs it is fed (None: the backbone's own; the detector
    may choose a smaller one for CNNs); `adapt` prepares its training inputs at this size."""

    def __init__(self, backbone: Backbone, levels: list[int], adapters: bool, heads: str | None,
                 text_embeddings: torch.Tensor | None = None, stream: bool | None = None,
                 learnable_prompts: bool = True, reduction: int = 4, input_size: int | None = None):
        super().__init__()
        self.backbone = backbone
        self.input_size = int(input_size or backbone.input_size)
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
        """Per level (B, 1, h, w) abnormal-minus-normal map logits, and (B,) image logits."""
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
