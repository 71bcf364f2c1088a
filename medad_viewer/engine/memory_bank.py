"""Few-shot memory bank: reference patch features on one patch grid; a test patch scores its distance to the
nearest reference patch (1 − max cosine similarity, as in MVFA-AD, or L2 as in PatchCore).

Patch features: each used level is averaged with its 3×3 neighbours (small shifts between slices then cost little),
brought to one grid (finer levels area-averaged down, coarser ones bilinearly up) and concatenated, so one distance
compares a patch's fine texture and its wider context together. Greedy coreset subsampling keeps a large bank
(many references) at a fixed size, so scoring time does not grow with the number of references.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def local_aggregate(feats: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Average each patch with its neighbours (PatchCore); borders average only what lies inside the image."""
    if kernel <= 1:
        return feats
    return F.avg_pool2d(feats, kernel, stride=1, padding=kernel // 2, count_include_pad=False)


def to_grid(feats: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, grid, grid): area average when finer, bilinear when coarser."""
    h, w = feats.shape[-2:]
    if (h, w) == (grid, grid):
        return feats
    if h >= grid and w >= grid:
        return F.adaptive_avg_pool2d(feats, (grid, grid))
    return F.interpolate(feats, size=(grid, grid), mode="bilinear", align_corners=False)


def patch_features(level_feats: list[torch.Tensor], grid: int, kernel: int = 3) -> torch.Tensor:
    """Per-level features (B, C_l, h_l, w_l) -> one (B, sum C_l, grid, grid) patch feature map."""
    return torch.cat([to_grid(local_aggregate(f.float(), kernel), grid) for f in level_feats], dim=1)


def neighbourhood_distance(query: torch.Tensor, other: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """(B, C, g, g) x (B, C, g, g) -> (B, g, g): 1 - the best cosine similarity of each query patch to the patches
    of `other` within `radius` cells of the same place (off the grid counts as dissimilar)."""
    q = F.normalize(query.float(), dim=1)
    o = F.normalize(other.float(), dim=1)
    b, c, g, _ = q.shape
    k = 2 * radius + 1
    cols = F.unfold(o, k, padding=radius).view(b, c, k * k, g * g)
    sim = (cols * q.view(b, c, 1, g * g)).sum(1).amax(1)
    return (1.0 - sim).clamp_min(0.0).view(b, g, g)


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
    """Reference patch features (N, C). `owners` remembers which reference each entry came from (a mirrored copy
    has an owner of its own), so leave-one-out calibration can score a reference against the others; `cells` where
    on that owner's patch grid (row * grid + column), so a match can be shown (None in banks saved without it)."""

    def __init__(self, metric: str = "cosine", max_patches: int = 16384):
        if metric not in ("cosine", "l2"):
            raise ValueError(f"unknown metric {metric}")
        self.metric = metric
        self.max_patches = int(max_patches)
        self.features = torch.empty(0)
        self.owners = torch.empty(0, dtype=torch.long)
        self.cells: torch.Tensor | None = torch.empty(0, dtype=torch.long)

    def _rows(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, C, g, g) -> (B*g*g, C), unit length for cosine."""
        f = patches.flatten(2).transpose(1, 2).reshape(-1, patches.shape[1])
        return F.normalize(f, dim=-1) if self.metric == "cosine" else f

    def fit(self, patches: torch.Tensor, owners: torch.Tensor, keep: torch.Tensor | None = None,
            seed: int = 0) -> "MemoryBank":
        """patches: (B, C, g, g) patch features; owners: (B,) owner id of each image; keep: optional (B, g, g) bool
        of the patches worth keeping (those that touch the anatomy: pure air is never scored)."""
        b, _, g, _ = patches.shape
        f = self._rows(patches)
        own = owners.view(b, 1).expand(b, g * g).reshape(-1).to(f.device)
        cell = torch.arange(g * g, device=f.device).repeat(b)  # rows of _rows: image-major, then row-major cells
        if keep is not None:
            k = keep.reshape(-1).to(f.device)
            if int(k.sum()) >= 16:
                f, own, cell = f[k], own[k], cell[k]
        if f.shape[0] > self.max_patches:
            idx = greedy_coreset(f, self.max_patches, seed=seed)
            f, own, cell = f[idx], own[idx], cell[idx]
        self.features = f.contiguous()
        self.owners = own.contiguous()
        self.cells = cell.contiguous()
        return self

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @torch.no_grad()
    def score(self, patches: torch.Tensor, exclude_owners: tuple[int, ...] = (), chunk: int = 4096,
              where: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, g, g) test patch features -> (B, g, g) distances to the nearest kept reference patch.
        `where` (B, g, g) bool: score only these patches (the others are 0); the rest of the image is never read."""
        return self._search(patches, exclude_owners, chunk, where, with_index=False)[0]

    @torch.no_grad()
    def nearest(self, patches: torch.Tensor, exclude_owners: tuple[int, ...] = (), chunk: int = 4096,
                where: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`score`'s distances, computed the same way, and (B, g, g) the index of the bank entry each patch matched
        (into `features`, `owners`, `cells`; -1 where not scored)."""
        return self._search(patches, exclude_owners, chunk, where, with_index=True)

    def _search(self, patches: torch.Tensor, exclude_owners: tuple[int, ...], chunk: int,
                where: torch.Tensor | None, with_index: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        bank = self.features
        entries = None  # bank row -> entry index, when some owners are hidden
        if exclude_owners:
            keep = ~torch.isin(self.owners, torch.tensor(exclude_owners, device=self.owners.device))
            if keep.any():
                bank = bank[keep]
                entries = torch.nonzero(keep, as_tuple=True)[0]
        b, _, g, _ = patches.shape
        q = self._rows(patches)
        rows = None if where is None else torch.nonzero(where.reshape(-1), as_tuple=True)[0]
        if rows is not None:
            q = q[rows]
        dist = torch.empty(q.shape[0], device=q.device)
        arg = torch.empty(q.shape[0], dtype=torch.long, device=q.device) if with_index else None
        for s in range(0, q.shape[0], chunk):
            part = q[s: s + chunk]
            if self.metric == "cosine":
                sim = part @ bank.T
                if with_index:  # the same maximum as amax, with where it is
                    best, arg[s: s + chunk] = sim.max(dim=1)
                else:
                    best = sim.amax(dim=1)
                dist[s: s + chunk] = (1.0 - best).clamp_min_(0.0)
            else:
                d = torch.cdist(part, bank)
                if with_index:
                    dist[s: s + chunk], arg[s: s + chunk] = d.min(dim=1)
                else:
                    dist[s: s + chunk] = d.amin(dim=1)
        if with_index and entries is not None:
            arg = entries[arg]
        if rows is None:
            return dist.view(b, g, g), None if arg is None else arg.view(b, g, g)
        out = torch.zeros(b * g * g, device=q.device)
        out[rows] = dist
        idx = None
        if arg is not None:
            idx = torch.full((b * g * g,), -1, dtype=torch.long, device=q.device)
            idx[rows] = arg
            idx = idx.view(b, g, g)
        return out.view(b, g, g), idx

    def state(self) -> dict[str, torch.Tensor]:
        out = {"bank.features": self.features.detach().cpu().contiguous(),
               "bank.owners": self.owners.detach().cpu().contiguous()}
        if self.cells is not None:
            out["bank.cells"] = self.cells.detach().cpu().contiguous()
        return out

    def load_state(self, state: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> "MemoryBank":
        self.features = state["bank.features"].to(device)
        self.owners = state["bank.owners"].to(device)
        cells = state.get("bank.cells")  # absent in banks saved before the cells were kept
        self.cells = None if cells is None else cells.to(device)
        return self
