"""Compare detector settings on the development sets (every fold, several seeds), to choose defaults.

    python benchmarks/build_devset.py            # once
    python benchmarks/compare_methods.py [--sets flair,t1c,mr] [--k 4] [--seeds 0,1,2] [--variants memory,adapted]
                                         [--json out.json]

Sets: flair = brats-flair-f0..f2 (the main set: skull-stripped, patient-disjoint folds), t1c = the same patients in
T1c, mr = mr-brain-a/b (whole head, not skull-stripped). Every run goes through `medad_viewer.engine.evaluate`, the
code behind `medad-viewer eval`, so images are read and prepared exactly as `score` and the viewer prepare them.

Prints, per variant and set: image and pixel AUROC, mean over folds x seeds, the worst seed, and each fold's mean
and worst seed. A setting becomes a default only when it beats the simpler alternative on the flair folds (mean and
every fold's mean) and does not lose on the whole-head set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from medad_viewer.engine.backbones import load_backbone, resolve_device  # noqa: E402
from medad_viewer.engine.detector import DetectorSettings  # noqa: E402
from medad_viewer.engine.evaluate import BmadDataset, evaluate  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SETS = {"flair": ["brats-flair-f0", "brats-flair-f1", "brats-flair-f2"],
        "t1c": ["brats-t1c-f0", "brats-t1c-f1", "brats-t1c-f2"],
        "mr": ["mr-brain-a", "mr-brain-b"]}


def variants(base: DetectorSettings) -> dict[str, DetectorSettings]:
    """Named settings; each differs from `memory` or `adapted` (the defaults of each method) in one respect."""
    mem = replace(base, method="memory")
    ad = replace(base, method="adapted")
    return {
        "memory": mem,
        "adapted": ad,
        # The training-free recipe of issue 10 (levels at strides 8 and 16, L2, no mirrored references, max score,
        # the map blurred over the whole image and not restricted to the anatomy).
        "recipe": replace(mem, levels=(1, 2), metric="l2", bank_flip=False, image_score="max",
                          image_score_contrast=0.0, scoring_region="image"),
        "memory-contrast0": replace(mem, image_score_contrast=0.0),
        "memory-contrast0.5": replace(mem, image_score_contrast=0.5),
        "adapted-contrast0": replace(ad, image_score_contrast=0.0),
        "memory-l2": replace(mem, metric="l2"),
        "memory-levels12": replace(mem, levels=(1, 2)),
        "memory-levels012": replace(mem, levels=(0, 1, 2)),
        "memory-noflip": replace(mem, bank_flip=False),
        "memory-max": replace(mem, image_score="max"),
        "memory-body": replace(mem, scoring_region="body"),
        "memory-image": replace(mem, scoring_region="image"),
        "memory-coreset": replace(mem, bank_max_patches=4096),
        "adapted-body": replace(ad, scoring_region="body"),
        "adapted-fusion0.75": replace(ad, fusion_weight=0.75),
        "adapted-fusion0.25": replace(ad, fusion_weight=0.25),
    }


def _fmt(rows: list[dict], key: str) -> str:
    vals = [s[key] for r in rows for s in r["per_seed"] if s[key] is not None]
    if not vals:
        return f"{key.split('_')[0]:5s} n/a"
    folds = " ".join(f"{np.mean([s[key] for s in r['per_seed']]):.3f}/{min(s[key] for s in r['per_seed']):.3f}"
                     for r in rows)
    return f"{key.split('_')[0]:5s} {np.mean(vals):.3f} (worst {min(vals):.3f}; folds mean/worst {folds})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devset", type=Path, default=REPO / "devset")
    ap.add_argument("--sets", default="flair,mr")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default="memory,adapted")
    ap.add_argument("--folds", default="", help="only folds whose name contains one of these (comma-separated)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    all_v = variants(DetectorSettings())
    names = list(all_v) if args.variants == "all" else args.variants.split(",")
    unknown = [n for n in names if n not in all_v]
    if unknown:
        sys.exit(f"unknown variants {unknown}; known: {', '.join(all_v)}")
    device = resolve_device("auto")
    backbone = load_backbone(DetectorSettings().backbone, device=device)
    table: dict = {}
    for set_name in args.sets.split(","):
        folds = [args.devset / f for f in SETS[set_name]
                 if not args.folds or any(part in f for part in args.folds.split(","))]
        missing = [f for f in folds if not (f / "train").is_dir()]
        if missing:
            sys.exit(f"no development set at {missing[0]}: run benchmarks/build_devset.py first")
        datasets = {f.name: BmadDataset(f) for f in folds}
        for name in names:
            t0 = time.monotonic()
            rows = [evaluate(ds.root, args.k, seeds, all_v[name], device=str(device), dataset=ds, backbone=backbone)
                    for ds in datasets.values()]
            table.setdefault(name, {})[set_name] = rows
            fit = np.mean([s["adapt_s"] for r in rows for s in r["per_seed"]])
            stops = sorted({str(s.get("stopped_because")) for r in rows for s in r["per_seed"]})
            print(f"{name:18s} {set_name:5s} k={args.k} {_fmt(rows, 'image_auroc')}  {_fmt(rows, 'pixel_auroc')}  "
                  f"fit {fit:.1f}s  stops {','.join(stops)}  ({time.monotonic() - t0:.0f}s)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(table, indent=1, default=float))


if __name__ == "__main__":
    main()
