"""Compare scoring methods and settings on the development set (both folds, several seeds), to choose defaults.

    python benchmarks/build_devset.py            # once
    python benchmarks/compare_methods.py [--k 4] [--seeds 0,1,2] [--variants memory,adapted,...] [--json out.json]

Prints one row per variant: image and pixel AUROC, AUPRO (mean over folds and seeds, with min..max over seeds),
adaptation seconds. Defaults are changed only when a variant beats the simpler alternative here *and* the margin
is larger than the spread over seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from medad_viewer.engine.backbones import load_backbone, resolve_device  # noqa: E402
from medad_viewer.engine.detector import DetectorSettings  # noqa: E402
from medad_viewer.engine.evaluate import BmadDataset, evaluate  # noqa: E402
from medad_viewer.engine.preprocess import IntensityNormalizer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def variants(base: DetectorSettings) -> dict[str, DetectorSettings]:
    a = base.adapt
    return {
        "memory": replace(base, method="memory"),
        "adapted": replace(base, method="adapted"),
        "memory-noagg": replace(base, method="memory", aggregate_kernel=1),
        "memory-l2": replace(base, method="memory", metric="l2"),
        "memory-levels01": replace(base, method="memory", levels=(0, 1)),
        "memory-levels12": replace(base, method="memory", levels=(1, 2)),
        "adapted-levels012": replace(base, method="adapted", levels=(0, 1, 2)),
        "adapted-levels12": replace(base, method="adapted", levels=(1, 2)),
        "memory-levels012": replace(base, method="memory", levels=(0, 1, 2)),
        "memory-levels0123": replace(base, method="memory", levels=(0, 1, 2, 3)),
        "memory-refaug": replace(base, method="memory", ref_augmentations=3),
        "memory-max": replace(base, method="memory", image_score="max"),
        "adapted-max": replace(base, method="adapted", image_score="max"),
        "adapted-aug": replace(base, method="adapted", ref_augmentations=3, adapt=replace(a, augment=True)),
        "adapted-fusion0.25": replace(base, method="adapted", fusion_weight=0.25),
        "adapted-fusion0.75": replace(base, method="adapted", fusion_weight=0.75),
        "adapted-headonly": replace(base, method="adapted", fusion_weight=0.0),
        "adapted-augtrain": replace(base, method="adapted", adapt=replace(a, augment=True)),
        "adapted-refaug": replace(base, method="adapted", ref_augmentations=3),
        "memory-fullbank": replace(base, method="memory", bank_coreset_fraction=1.0),
        "adapted-fullbank": replace(base, method="adapted", bank_coreset_fraction=1.0),
        "memory-nobody": replace(base, method="memory", restrict_to_body=False),
        "adapted-nobody": replace(base, method="adapted", restrict_to_body=False),
        # Intensity standardisation per slice (1-99.5 percentiles of the foreground) instead of per volume.
        "memory-perslice": replace(base, method="memory"),
        "adapted-perslice": replace(base, method="adapted"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devset", type=Path, default=REPO / "devset")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default="memory,adapted")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    base = DetectorSettings(modality="MR")
    if args.max_steps:
        base = replace(base, adapt=replace(base.adapt, max_steps=args.max_steps))
    all_v = variants(base)
    names = list(all_v) if args.variants == "all" else args.variants.split(",")
    folds = sorted(p for p in args.devset.iterdir() if (p / "train").is_dir())
    if not folds:
        sys.exit(f"no development set under {args.devset}: run benchmarks/build_devset.py first")
    device = resolve_device("auto")
    backbone = load_backbone(base.backbone, device=device)
    datasets = {f.name: BmadDataset(f) for f in folds}
    per_slice = {f.name: BmadDataset(f, normalizer=IntensityNormalizer(per_slice_pct=(1.0, 99.5))) for f in folds} \
        if any(n.endswith("-perslice") for n in names) else {}
    table = {}
    for name in names:
        rows = []
        for fold, ds in (per_slice if name.endswith("-perslice") else datasets).items():
            r = evaluate(ds.root, args.k, seeds, all_v[name], device=str(device), dataset=ds, backbone=backbone)
            rows.append(r)
            print(f"  {name:22s} {fold}: img {r['image_auroc']:.3f} [{r['image_auroc_min']:.3f}-"
                  f"{r['image_auroc_max']:.3f}] pix {r['pixel_auroc']:.3f} [{r['pixel_auroc_min']:.3f}-"
                  f"{r['pixel_auroc_max']:.3f}] aupro {r['aupro']:.3f} adapt {r['adapt_s']:.1f}s", file=sys.stderr)
        agg = {}
        for key in ("image_auroc", "pixel_auroc", "aupro", "f1_max", "adapt_s", "score_s_per_image"):
            vals = [x[key] for r in rows for x in r["per_seed"] if x[key] is not None]
            agg[key] = float(np.mean(vals))
            agg[key + "_min"] = float(np.min(vals))
            agg[key + "_max"] = float(np.max(vals))
        table[name] = {"mean": agg, "folds": rows}
        print(f"{name:22s} image_auroc {agg['image_auroc']:.3f} ({agg['image_auroc_min']:.3f}-{agg['image_auroc_max']:.3f})"
              f"  pixel_auroc {agg['pixel_auroc']:.3f} ({agg['pixel_auroc_min']:.3f}-{agg['pixel_auroc_max']:.3f})"
              f"  aupro {agg['aupro']:.3f}  adapt {agg['adapt_s']:.1f}s  score {agg['score_s_per_image']*1000:.0f}ms/img",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(table, indent=2, default=float))


if __name__ == "__main__":
    main()
