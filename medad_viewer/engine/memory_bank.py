"""Few-shot memory bank: reference patch features on one patch grid; a test patch scores its distance to the
nearest reference patch (1 − max cosine similarity, as in MVFA-AD, or L2 as in PatchCore).

Patch features: each used level is averaged with its 3×3 neighbours (small shifts between slices then cost little),
brought to one grid (finer levels area-averaged down, coarser ones bilinearly up) and concatenated, so one distance
compares a patch's fine texture and its wider context together. Greedy coreset subsampling keeps a large bank
(many references) at a fixed size, so scoring time does not grow with the number of references.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def local_aggregate(feats: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Average each patch with its `kernel` x `kernel` neighbours (PatchCore); borders average only what lies inside
    the image (avg_pool2d with count_include_pad=False). As separable sums of shifted views divided by the count: on
    a CPU, torch's avg_pool2d without padded counts took 0.42 ms a slice on the demo's finer level against 0.05."""
    if kernel <= 1:
        return feats
    r = kernel // 2
    h, w = feats.shape[-2:]
    p = F.pad(feats, (r, r, r, r))
    rows = p[..., :, 0:w]
    for dx in range(1, kernel):
        rows = rows + p[..., :, dx: dx + w]
    box = rows[..., 0:h, :]
    for dy in range(1, kernel):
        box = box + rows[..., dy: dy + h, :]
    return box / (_inside_count(h, r, feats.device)[:, None] * _inside_count(w, r, feats.device)[None, :])


def _inside_count(n: int, r: int, device: torch.device) -> torch.Tensor:
    """(n,) how many of the positions i - r .. i + r lie inside 0 .. n - 1."""
    i = torch.arange(n, device=device)
    return ((i + r).clamp(max=n - 1) - (i - r).clamp(min=0) + 1).to(torch.float32)


def unit_channels(x: torch.Tensor) -> torch.Tensor:
    """`x` divided by its norm over dim 1 (F.normalize(x, dim=1), the same to 1e-7): on a CPU, F.normalize over the
    channels of a (B, C, g, g) map took 0.16 ms a slice against 0.013."""
    return x / (x * x).sum(1, keepdim=True).sqrt().clamp_min(1e-12)


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


def split_intensity(patches: torch.Tensor, intensity_weight: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Patch features whose last channel is the patch's mean intensity (when `intensity_weight` > 0) -> (features,
    intensity or None)."""
    if intensity_weight > 0:
        return patches[:, :-1], patches[:, -1]
    return patches, None


def neighbourhood_distance(query: torch.Tensor, other: torch.Tensor, radius: int = 1,
                           intensity_weight: float = 0.0) -> torch.Tensor:
    """(B, C, g, g) x (B, C, g, g) -> (B, g, g): the distance of each query patch to the nearest patch of `other`
    within `radius` cells of the same place (off the grid counts as dissimilar): 1 - cosine similarity, plus
    `intensity_weight`² / 2 times the squared difference of their mean intensities when the last channel holds it."""
    qf, qi = split_intensity(query.float(), intensity_weight)
    of, oi = split_intensity(other.float(), intensity_weight)
    q = unit_channels(qf)
    r = radius
    o = F.pad(unit_channels(of), (r, r, r, r))  # off the grid: zero features (and zero intensity)
    oi = None if oi is None else F.pad(oi, (r, r, r, r))
    g = q.shape[-1]
    best = None
    for dy in range(2 * r + 1):  # one shifted product per offset: no (B, C * (2r + 1)², g²) unfolded copy
        for dx in range(2 * r + 1):
            sim = (q * o[:, :, dy: dy + g, dx: dx + g]).sum(1)
            if qi is not None:
                sim = sim - 0.5 * intensity_weight ** 2 * (oi[:, dy: dy + g, dx: dx + g] - qi) ** 2
            best = sim if best is None else torch.maximum(best, sim)
    return (1.0 - best).clamp_min(0.0)


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

    def __init__(self, metric: str = "cosine", max_patches: int = 16384, intensity_weight: float = 0.0):
        if metric not in ("cosine", "l2"):
            raise ValueError(f"unknown metric {metric}")
        if intensity_weight > 0 and metric != "cosine":
            raise ValueError("the intensity term is defined for the cosine metric")
        self.metric = metric
        self.max_patches = int(max_patches)
        # > 0: the patches' last channel is their mean intensity, and a match costs (w² / 2) * its squared
        # difference on top of 1 - cosine similarity (cosine alone cannot tell a bright patch from a dark one).
        self.intensity_weight = float(intensity_weight)
        self.features = torch.empty(0)
        self.intensity: torch.Tensor | None = None
        self.owners = torch.empty(0, dtype=torch.long)
        self.cells: torch.Tensor | None = torch.empty(0, dtype=torch.long)

    def _split(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, C, g, g) -> rows (B*g*g, C') unit length for cosine, and the rows' intensities (or None)."""
        feats, inten = split_intensity(patches, self.intensity_weight)
        f = feats.flatten(2).transpose(1, 2).reshape(-1, feats.shape[1])
        f = F.normalize(f, dim=-1) if self.metric == "cosine" else f
        return f, None if inten is None else inten.reshape(-1).float()

    def _rows(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, C, g, g) -> (B*g*g, C'), unit length for cosine (without the intensity channel)."""
        return self._split(patches)[0]

    def fit(self, patches: torch.Tensor, owners: torch.Tensor, keep: torch.Tensor | None = None,
            seed: int = 0) -> "MemoryBank":
        """patches: (B, C, g, g) patch features; owners: (B,) owner id of each image; keep: optional (B, g, g) bool
        of the patches worth keeping (those that touch the anatomy: pure air is never scored)."""
        b, _, g, _ = patches.shape
        f, inten = self._split(patches)
        if inten is None:
            inten = torch.zeros(f.shape[0], device=f.device)
        own = owners.view(b, 1).expand(b, g * g).reshape(-1).to(f.device)
        cell = torch.arange(g * g, device=f.device).repeat(b)  # rows of _rows: image-major, then row-major cells
        if keep is not None:
            k = keep.reshape(-1).to(f.device)
            if int(k.sum()) >= 16:
                f, inten, own, cell = f[k], inten[k], own[k], cell[k]
        if f.shape[0] > self.max_patches:
            # The coreset sees the intensity as one more coordinate, weighted as the distance weighs it.
            x = torch.cat([f, self.intensity_weight * inten[:, None]], 1) if self.intensity_weight > 0 else f
            idx = greedy_coreset(x, self.max_patches, seed=seed)
            f, inten, own, cell = f[idx], inten[idx], own[idx], cell[idx]
        self.features = f.contiguous()
        self.intensity = inten.contiguous() if self.intensity_weight > 0 else None
        self.owners = own.contiguous()
        self.cells = cell.contiguous()
        return self

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @torch.no_grad()
    def score(self, patches: torch.Tensor, exclude_owners: tuple[int, ...] = (), chunk: int | None = None,
              where: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, g, g) test patch features -> (B, g, g) distances to the nearest kept reference patch.
        `where` (B, g, g) bool: score only these patches (the others are 0); the rest of the image is never read."""
        return self._search(patches, exclude_owners, chunk, where, with_index=False)[0]

    @torch.no_grad()
    def nearest(self, patches: torch.Tensor, exclude_owners: tuple[int, ...] = (), chunk: int | None = None,
                where: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`score`'s distances, computed the same way, and (B, g, g) the index of the bank entry each patch matched
        (into `features`, `owners`, `cells`; -1 where not scored)."""
        return self._search(patches, exclude_owners, chunk, where, with_index=True)

    def _search(self, patches: torch.Tensor, exclude_owners: tuple[int, ...], chunk: int | None,
                where: torch.Tensor | None, with_index: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        if chunk is None:
            # On a CPU, queries in blocks whose similarity matrix (block x bank) holds about 2 million values (8 MB),
            # small enough to stay in cache for the maximum that follows: on the demo's slices (2 cores, torch 2.13's
            # CPU build) 3,166 bank patches took 1.8-1.9 ms a slice in blocks of 256-512 against 2.9-4.7 in blocks
            # of 2,048; 8,192 patches 3.5-3.7 ms in blocks of 256, 3.9 in blocks of 512, 9.6 in blocks of 1,024.
            # (With torch 2.14.1's CUDA build on the CPU, blocks of 5 million values had measured best.)
            chunk = (2 ** round(math.log2(2e6 / max(len(self), 1))) if patches.device.type == "cpu" else 8192)
            chunk = min(max(chunk, 128), 8192)
        bank = self.features
        bank_i = self.intensity
        entries = None  # bank row -> entry index, when some owners are hidden
        if exclude_owners:
            keep = ~torch.isin(self.owners, torch.tensor(exclude_owners, device=self.owners.device))
            if keep.any():
                bank = bank[keep]
                bank_i = None if bank_i is None else bank_i[keep]
                entries = torch.nonzero(keep, as_tuple=True)[0]
        b, _, g, _ = patches.shape
        q, qi = self._split(patches)
        if bank_i is None:
            qi = None
        rows = None if where is None else torch.nonzero(where.reshape(-1), as_tuple=True)[0]
        if rows is not None:
            q = q[rows]
            qi = None if qi is None else qi[rows]
        half_w2 = 0.5 * self.intensity_weight ** 2
        dist = torch.empty(q.shape[0], device=q.device)
        arg = torch.empty(q.shape[0], dtype=torch.long, device=q.device) if with_index else None
        for s in range(0, q.shape[0], chunk):
            part = q[s: s + chunk]
            if self.metric == "cosine":
                # (bank, block): bank rows against the block's columns, the maximum down each column (the same
                # products as block @ bank.T; on 2 cores a third faster for k = 4's bank, a quarter for 8,192)
                sim = bank @ part.T
                if qi is not None:
                    sim -= half_w2 * (bank_i[:, None] - qi[None, s: s + chunk]) ** 2
                if with_index:  # the same maximum as amax, with where it is
                    best, arg[s: s + chunk] = sim.max(dim=0)
                else:
                    best = sim.amax(dim=0)
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
        if self.intensity is not None:
            out["bank.intensity"] = self.intensity.detach().cpu().contiguous()
        if self.cells is not None:
            out["bank.cells"] = self.cells.detach().cpu().contiguous()
        return out

    def load_state(self, state: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> "MemoryBank":
        self.features = state["bank.features"].to(device)
        self.owners = state["bank.owners"].to(device)
        inten = state.get("bank.intensity")
        self.intensity = None if inten is None else inten.to(device)
        cells = state.get("bank.cells")  # absent in banks saved before the cells were kept
        self.cells = None if cells is None else cells.to(device)
        return self
