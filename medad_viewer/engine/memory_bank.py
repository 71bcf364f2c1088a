"""Few-shot memory bank: reference patch features per level; a test patch scores 1 − max cosine similarity
(MVFA-AD) or its L2 distance to the nearest reference patch. Greedy coreset subsampling keeps the bank small."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def local_aggregate(feats: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Average each patch with its neighbours (PatchCore): small shifts between slices then cost little."""
    if kernel <= 1:
        return feats
    return F.avg_pool2d(feats, kernel, stride=1, padding=kernel // 2, count_include_pad=False)


def greedy_coreset(feats: torch.Tensor, size: int, seed: int = 0, proj_dim: int = 128) -> torch.Tensor:
    """Indices of `size` rows chosen by greedy k-centre on a random projection (PatchCore's coreset)."""
    n = feats.shape[0]
    if size >= n:
        return torch.arange(n, device=feats.device)
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = feats
    if x.shape[1] > proj_dim:
        proj = torch.randn(x.shape[1], proj_dim, generator=g).to(x.device, x.dtype) / proj_dim ** 0.5
        x = x @ proj
    start = int(torch.randint(n, (1,), generator=g))
    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = start
    # Squared distances as |x|^2 - 2 x.c + |c|^2: one matrix-vector product per iteration, no temporaries of x's size.
    sq = x.pow(2).sum(1)
    dist = (sq - 2 * (x @ x[start]) + sq[start]).clamp_min_(0)
    for j in range(1, size):
        nxt = int(torch.argmax(dist))
        chosen[j] = nxt
        torch.minimum(dist, sq - 2 * torch.mv(x, x[nxt]) + sq[nxt], out=dist)
    return chosen.to(feats.device)


class MemoryBank:
    """Per-level banks of reference patch features. `owner` remembers which reference each entry came from, so
    leave-one-out calibration can score a reference against the others."""

    def __init__(self, metric: str = "cosine", max_per_level: int = 8192, aggregate_kernel: int = 3,
                 coreset_fraction: float = 1.0):
        if metric not in ("cosine", "l2"):
            raise ValueError(f"unknown metric {metric}")
        self.metric = metric
        self.max_per_level = int(max_per_level)
        self.aggregate_kernel = int(aggregate_kernel)
        self.coreset_fraction = float(coreset_fraction)
        self.levels: list[torch.Tensor] = []
        self.owners: list[torch.Tensor] = []

    def _prepare(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, h*w, C), aggregated and (for cosine) unit length."""
        f = local_aggregate(feats.float(), self.aggregate_kernel)
        f = f.flatten(2).transpose(1, 2)
        return F.normalize(f, dim=-1) if self.metric == "cosine" else f

    def fit(self, level_feats: list[torch.Tensor], owners: torch.Tensor, body_masks: list[torch.Tensor] | None = None,
            seed: int = 0) -> "MemoryBank":
        """level_feats: per level (B, C, h, w); owners: (B,) reference index of each image; body_masks: per level
        (B, h, w) bool, so air and table patches do not fill the bank."""
        self.levels, self.owners = [], []
        for li, feats in enumerate(level_feats):
            f = self._prepare(feats)
            b, n, c = f.shape
            own = owners.view(b, 1).expand(b, n).reshape(-1).to(f.device)
            f = f.reshape(-1, c)
            if body_masks is not None:
                keep = body_masks[li].reshape(-1).to(f.device)
                if keep.sum() >= 16:
                    f, own = f[keep], own[keep]
            target = min(self.max_per_level, max(1024, int(self.coreset_fraction * f.shape[0])))
            if f.shape[0] > target:
                idx = greedy_coreset(f, target, seed=seed)
                f, own = f[idx], own[idx]
            self.levels.append(f.contiguous())
            self.owners.append(own.contiguous())
        return self

    @torch.no_grad()
    def score(self, level_feats: list[torch.Tensor], exclude_owner: int | None = None,
              chunk: int = 4096) -> list[torch.Tensor]:
        """Per level (B, h, w) anomaly scores of test features."""
        out = []
        for li, feats in enumerate(level_feats):
            bank = self.levels[li]
            if exclude_owner is not None:
                keep = self.owners[li] != exclude_owner
                if keep.any():
                    bank = bank[keep]
            b, _, h, w = feats.shape
            f = self._prepare(feats).reshape(-1, bank.shape[1])
            scores = torch.empty(f.shape[0], device=f.device)
            for s in range(0, f.shape[0], chunk):
                q = f[s: s + chunk]
                if self.metric == "cosine":
                    scores[s: s + chunk] = 1.0 - (q @ bank.T).amax(dim=1)
                else:
                    scores[s: s + chunk] = torch.cdist(q, bank).amin(dim=1)
            out.append(scores.view(b, h, w))
        return out

    def state(self) -> dict[str, torch.Tensor]:
        st = {}
        for i, (f, o) in enumerate(zip(self.levels, self.owners)):
            st[f"bank.{i}.features"] = f.detach().cpu().contiguous()
            st[f"bank.{i}.owners"] = o.detach().cpu().contiguous()
        return st

    def load_state(self, state: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> "MemoryBank":
        n = len({k.split(".")[1] for k in state if k.startswith("bank.")})
        self.levels = [state[f"bank.{i}.features"].to(device) for i in range(n)]
        self.owners = [state[f"bank.{i}.owners"].to(device) for i in range(n)]
        return self
