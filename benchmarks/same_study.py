"""The same-study protocol: each patient's volume scored, as the app is used, from a few lesion-free slices of that
same volume, through the code path of `medad-viewer score` and the window (load_study -> engine.pipeline.fit_and_score).

    python benchmarks/same_study.py [--set lgg|mr] [--k 4] [--seeds 0,1,2,3,4] [--folds 4] [--patients N]

Sets: lgg = ../shared/sample-data/lgg-flair (44 whole-head FLAIR volumes with lesion masks; development only, never
bundled), mr = tests/data/mr-brain (2 whole-head MR volumes with tumour labels; bundled). Patients are split into
folds round-robin by sorted name (the folds of build_devset.py's lgg-f0..f3), every fold's metrics are reported
per seed, then the mean over folds x seeds and the worst seed.

References: the volume's head slices (>= 15 % of pixels above 20 on the 8-bit volume) without lesion, k of them
spread over its levels: seed 0 at 20 %, 40 %, 60 %, 80 % of them (k = 4; 10 %..90 % otherwise), other seeds one
random slice from each of k equal strata of 10 %..90 %. Every other head slice is scored.

Also where the scoring region and the map's hottest normal pixels lie: the share of lesion pixels inside the
scoring region, and of the top 1 % map pixels of normal slices, the share within 10 px of the head's outline.

Metrics, at the app's default thresholds (a slice flagged at >= the 95th percentile of normal, a pixel coloured at
>= the map value of the 99th percentile of normal pixels): slice AUROC (of the percentile the window ranks by),
pixel AUROC (every pixel, as `eval`; and over head pixels only), lesion / normal slices flagged, lesion pixels / normal head pixels coloured (the
latter also on normal slices alone), and the lesion pixels coloured at the threshold that colours 2 % of normal
head pixels. Prints one line per fold and seed, the summary, and a JSON line last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from medad_viewer.engine.metrics import image_auroc, pixel_auroc  # noqa: E402

HEAD_LEVEL, HEAD_MIN_SHARE = 20, 0.15  # as build_devset.py
FLAG_PERCENTILE, COLOUR_PERCENTILE = 95.0, 99.0  # the window's defaults (gui/ranking_panel.py, review/results.py)
METRICS = ("slice_auroc", "pixel_auroc", "pixel_auroc_head", "lesion_flagged", "normal_flagged",
           "lesion_px_coloured", "normal_head_px_coloured", "normal_slice_px_coloured", "lesion_px_at_2pct",
           "lesion_px_in_region", "normal_top1_near_edge")
EDGE_PX = 10  # "near the head's edge": within this many pixels of the head outline (scalp, skull, orbits)


def cases(set_name: str, sample_data: Path) -> list[tuple[str, Path, Path]]:
    """(patient, image volume, lesion mask volume) of a set."""
    if set_name == "lgg":
        root = sample_data / "lgg-flair"
        if not root.is_dir():
            raise SystemExit(f"{root} is missing: the LGG development data live in ../shared/sample-data (see its "
                             f"README); pass --sample-data")
        return [(p.name, p / "flair.nii.gz", p / "mask.nii.gz") for p in sorted(root.iterdir())
                if (p / "flair.nii.gz").is_file()]
    if set_name == "mr":
        root = REPO / "tests" / "data" / "mr-brain"
        return [(n, root / f"{n}_image.nrrd", root / f"{n}_label.nrrd") for n in ("brain1", "brain2")]
    raise SystemExit(f"unknown set {set_name!r}: lgg or mr")


def _eight_bit(vol: np.ndarray) -> np.ndarray:
    if vol.dtype == np.uint8 or (vol.min() >= 0 and vol.max() <= 255):
        return vol.astype(np.float32)
    lo, hi = np.percentile(vol[vol > vol.min()], [0.5, 99.5]) if (vol > vol.min()).any() else (0.0, 1.0)
    return np.clip((vol - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255).astype(np.float32)


def pick_references(free: list[int], k: int, seed: int) -> list[int]:
    if not free:
        return []
    if seed == 0:
        lo, hi = (0.2, 0.8) if k == 4 else (0.1, 0.9)
        return sorted({free[round(f * (len(free) - 1))] for f in np.linspace(lo, hi, k)})
    rng = np.random.default_rng(seed)
    edges = np.linspace(0.1, 0.9, k + 1)
    return sorted({free[min(len(free) - 1, int(rng.uniform(edges[j], edges[j + 1]) * len(free)))] for j in range(k)})


def score_patient(image_path: Path, mask_path: Path, settings, backbone, device, k: int, seed: int) -> dict | None:
    """One volume scored from k of its own lesion-free slices: per scored slice its label, percentile, map (float16),
    lesion mask and head mask; None when the volume has too few lesion-free head slices."""
    from medad_viewer.engine.pipeline import SliceRef, fit_and_score
    from medad_viewer.engine.preprocess import normalizer_for_series
    from medad_viewer.io import load_study, series_sequence

    series = load_study(str(image_path)).series[0]
    labels = load_study(str(mask_path)).series[0]
    vol = np.stack([np.asarray(series.slice(i)) for i in range(series.num_slices)])
    mask = np.stack([np.asarray(labels.slice(i)) for i in range(labels.num_slices)]) > 0
    v8 = _eight_bit(vol)
    head = [z for z in range(len(vol)) if (v8[z] > HEAD_LEVEL).mean() >= HEAD_MIN_SHARE]
    free = [z for z in head if not mask[z].any()]
    refs = pick_references(free, k, seed)
    if len(refs) < min(k, 2):
        return None
    norm = normalizer_for_series(series)
    s = replace(settings, modality=series.modality, sequence=series_sequence(series),
                adapt=replace(settings.adapt, seed=seed))
    test = [z for z in head if z not in refs]
    if not test:
        return None
    run = fit_and_score([SliceRef(series, i) for i in refs], series, s, indices=test, backbone=backbone,
                        device=device)
    det, res = run.detector, run.scores
    colour = det.calibration.pixel_value_at(COLOUR_PERCENTILE) if det.calibration is not None else 1.0
    import cv2

    from medad_viewer.engine.preprocess import restore

    regions, edge_dist = [], []
    for z in test:
        p = det._prepare(norm(series.slice(z)))
        regions.append(restore(det.region_of(p).astype(np.float32), p) > 0.5)
        head_z = (v8[z] > HEAD_LEVEL).astype(np.uint8)
        n, cc, stats, _ = cv2.connectedComponentsWithStats(head_z)
        if n > 1:  # the head: the largest component, holes filled
            head_z = (cc == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
            cs, _ = cv2.findContours(head_z, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            head_z = cv2.drawContours(np.zeros_like(head_z), cs, -1, 1, -1)
        edge_dist.append(cv2.distanceTransform(head_z, cv2.DIST_L2, 3))
    return {"label": np.array([mask[z].any() for z in test]), "pct": np.array([res.results[z].percentile for z in test]),
            "maps": np.stack([res.results[z].map for z in test]).astype(np.float16), "masks": mask[test],
            "heads": v8[test] > HEAD_LEVEL, "colour": float(colour), "kind": det.kind,
            "regions": np.stack(regions), "edge_dist": np.stack(edge_dist).astype(np.float16),
            "intensity_weight": det.settings.intensity_weight}


def summarise(parts: list[dict]) -> dict:
    """Metrics of scored patients pooled (slices and pixels of every patient together)."""
    lab = np.concatenate([p["label"] for p in parts])
    pct = np.concatenate([p["pct"] for p in parts])
    out = {"slices": int(lab.size), "lesion_slices": int(lab.sum())}
    out["slice_auroc"] = image_auroc(lab, pct) if 0 < lab.sum() < lab.size else None
    out["lesion_flagged"] = float((pct[lab] >= FLAG_PERCENTILE).mean()) if lab.any() else None
    out["normal_flagged"] = float((pct[~lab] >= FLAG_PERCENTILE).mean()) if (~lab).any() else None
    lesion_v, normal_v, normal_slice_v, coloured = [], [], [], {"l": [0, 0], "n": [0, 0], "ns": [0, 0]}
    for p in parts:
        m = p["maps"].astype(np.float32)
        les, hd = p["masks"], p["heads"] & ~p["masks"]
        on = m >= p["colour"]
        coloured["l"][0] += int(on[les].sum()); coloured["l"][1] += int(les.sum())
        coloured["n"][0] += int(on[hd].sum()); coloured["n"][1] += int(hd.sum())
        ns = hd & ~p["label"][:, None, None]
        coloured["ns"][0] += int(on[ns].sum()); coloured["ns"][1] += int(ns.sum())
        lesion_v.append(m[les]); normal_v.append(m[hd]); normal_slice_v.append(m[ns])
    lv, nv = np.concatenate(lesion_v), np.concatenate(normal_v)
    out["lesion_px_coloured"] = coloured["l"][0] / coloured["l"][1] if coloured["l"][1] else None
    out["normal_head_px_coloured"] = coloured["n"][0] / coloured["n"][1] if coloured["n"][1] else None
    out["normal_slice_px_coloured"] = coloured["ns"][0] / coloured["ns"][1] if coloured["ns"][1] else None
    out["lesion_px_at_2pct"] = float((lv >= np.quantile(nv, 0.98)).mean()) if lv.size and nv.size else None
    # Pixel AUROC as `eval` computes it (every pixel of the scored slices: air, outside the region, a perfect
    # match), and over head pixels only (lesion against the rest of the head: stricter).
    out["pixel_auroc"] = pixel_auroc(np.concatenate([p["masks"].ravel() for p in parts]),
                                     np.concatenate([p["maps"].astype(np.float32).ravel() for p in parts]))
    if lv.size and nv.size:
        out["pixel_auroc_head"] = pixel_auroc(np.concatenate([np.ones(lv.size, bool), np.zeros(nv.size, bool)]),
                                              np.concatenate([lv, nv]))
    else:
        out["pixel_auroc_head"] = None
    # The scoring region and where the hottest normal pixels lie: lesion pixels inside the region (goal >= 99 %);
    # of the top 1 % map pixels of normal slices' heads, the share within EDGE_PX of the head's outline.
    les_total = sum(int(p["masks"].sum()) for p in parts)
    out["lesion_px_in_region"] = (sum(int((p["masks"] & p["regions"]).sum()) for p in parts) / les_total
                                  if les_total else None)
    nsv = np.concatenate(normal_slice_v)
    out["normal_top1_near_edge"] = None
    if nsv.size:
        top = np.quantile(nsv, 0.99)
        near = total = 0
        for p in parts:
            ns = p["heads"] & ~p["masks"] & ~p["label"][:, None, None]
            hot = ns & (p["maps"].astype(np.float32) >= top)
            near += int((hot & (p["edge_dist"].astype(np.float32) <= EDGE_PX)).sum())
            total += int(hot.sum())
        out["normal_top1_near_edge"] = near / total if total else None
    return out


def run(settings, set_name: str, k: int, seeds: list[int], folds: int, sample_data: Path, backbone, device,
        patients: int | None = None, verbose: bool = True) -> dict:
    """Every fold x seed of a set: {"per_fold": [{"fold", "patients", "per_seed": [metrics + seed]}], "mean": ...,
    "worst": ...} (mean and worst over folds x seeds; worst = the lowest, or for normal_* the highest)."""
    all_cases = cases(set_name, sample_data)[:patients]
    n_folds = max(1, min(folds, len(all_cases)))
    per_fold = [{"fold": f, "patients": [c[0] for i, c in enumerate(all_cases) if i % n_folds == f], "per_seed": []}
                for f in range(n_folds)]
    for seed in seeds:
        scored = {}
        for name, img, msk in all_cases:
            r = score_patient(img, msk, settings, backbone, device, k, seed)
            if r is not None:
                scored[name] = r
        for fold in per_fold:
            parts = [scored[n] for n in fold["patients"] if n in scored]
            row = {"seed": seed, **summarise(parts)} if parts else {"seed": seed}
            fold["per_seed"].append(row)
            if verbose:
                print(f"  fold {fold['fold']} seed {seed}: " + ", ".join(
                    f"{m} {row[m]:.3f}" for m in METRICS if row.get(m) is not None), flush=True)
        kinds = sorted({str(r["kind"]) for r in scored.values()})
        weights = sorted({float(r["intensity_weight"]) for r in scored.values()})
    out = {"set": f"{set_name}-same", "k": k, "seeds": seeds, "per_fold": per_fold, "kinds": kinds,
           "intensity_weights": weights, "mean": {}, "worst": {}}
    for m in METRICS:
        vals = [r[m] for f in per_fold for r in f["per_seed"] if r.get(m) is not None]
        out["mean"][m] = float(np.mean(vals)) if vals else None
        out["worst"][m] = (float(max(vals)) if m.startswith("normal") else float(min(vals))) if vals else None
    return out


def fmt(result: dict) -> str:
    """One line: each metric's mean over folds x seeds, (worst seed; each fold's mean)."""
    parts = []
    for m in METRICS:
        if result["mean"].get(m) is None:
            continue
        folds = "/".join(f"{np.mean([r[m] for r in f['per_seed'] if r.get(m) is not None]):.3f}"
                         for f in result["per_fold"] if any(r.get(m) is not None for r in f["per_seed"]))
        parts.append(f"{m} {result['mean'][m]:.3f} (w {result['worst'][m]:.3f}; {folds})")
    return "; ".join(parts)


def main() -> None:
    from medad_viewer.engine.backbones import load_backbone, resolve_device
    from medad_viewer.engine.detector import DetectorSettings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="lgg", choices=("lgg", "mr"))
    ap.add_argument("--sample-data", type=Path, default=REPO.parent / "shared" / "sample-data")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--patients", type=int, default=None, help="only the first N patients (smoke runs)")
    ap.add_argument("--settings", default="{}", help="DetectorSettings fields as JSON, e.g. '{\"self_mirror\": \"off\"}'")
    ap.add_argument("--feature-cache", type=Path, default=None,
                    help="a folder caching the frozen backbone's outputs (float16) across runs: see feature_cache.py")
    args = ap.parse_args()
    if args.feature_cache:
        import feature_cache

        feature_cache.install(args.feature_cache)
    settings = DetectorSettings.from_dict(json.loads(args.settings))
    device = resolve_device("auto")
    backbone = load_backbone(settings.backbone, settings.weights, device=device)
    t0 = time.monotonic()
    result = run(settings, args.set, args.k, [int(s) for s in args.seeds.split(",")], args.folds, args.sample_data,
                 backbone, device, args.patients)
    print(f"{args.set}-same k={args.k} {backbone.name} ({backbone.weights}): {fmt(result)}  "
          f"({time.monotonic() - t0:.0f}s)")
    print(json.dumps({"set": result["set"], "k": args.k, "seeds": result["seeds"], "backbone": backbone.name,
                      "weights": backbone.weights, "kinds": result["kinds"],
                      "intensity_weights": result["intensity_weights"], "mean": result["mean"],
                      "worst": result["worst"], "folds": len(result["per_fold"]),
                      "seconds": round(time.monotonic() - t0, 1)}))


if __name__ == "__main__":
    main()
