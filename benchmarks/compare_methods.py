"""Compare detector settings on the development sets (every fold, several seeds), to choose defaults.

    python benchmarks/build_devset.py            # once
    python benchmarks/compare_methods.py [--sets lgg,lgg-same,cxr,flair,t1c,mr,mr-same] [--k 4]
                                         [--seeds 0,1,2,3,4] [--variants memory,no-mirror] [--json out.json]

Sets, other-patient protocol (references drawn from other patients' normal slices, BMAD-like folders written by
build_devset.py): lgg = lgg-f0..f3 (whole-head FLAIR, the main development set), cxr = cxr-f0..f3 (adult chest
X-rays, image labels), flair = brats-flair-f0..f2 (skull-stripped), t1c = the same patients in T1c, mr =
mr-brain-a/b (whole head). These go through `medad_viewer.engine.evaluate`, the code behind `medad-viewer eval`.
Same-study protocol (each volume scored from k lesion-free slices of itself, as the app is used; see
same_study.py): lgg-same (44 LGG volumes, 4 folds by patient), mr-same (the 2 bundled MR volumes).

Prints, per variant and set: the metrics' mean over folds x seeds, the worst seed, and each fold's mean (and worst
seed); a JSON line last. A setting becomes a default only when it beats the simpler alternative on every set.
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
        "mr": ["mr-brain-a", "mr-brain-b"],
        "lgg": [f"lgg-f{i}" for i in range(4)],
        "cxr": [f"cxr-f{i}" for i in range(4)]}
SAME_STUDY_SETS = {"lgg-same": "lgg", "mr-same": "mr"}


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
                          image_score_contrast=0.0, scoring_region="image", self_mirror="off", guided_radius=0,
                          smoothing_sigma=4.0, intensity_weight=0.0, through_plane="off"),
        # The defaults before issue 19: no mirror, the slice-median contrast, sigma 4 without the guided filter, no
        # intensity term, every image as a head cross-section (plain chest X-rays got the skull search), each slice
        # of a volume scored alone.
        "previous-default": replace(mem, modality="MR", self_mirror="off", image_score="local_max",
                                    image_score_contrast=1.0, smoothing_sigma=4.0, guided_radius=0,
                                    intensity_weight=0.0, through_plane="off"),
        # Each default of issue 19 against the simpler alternative:
        "no-mirror": replace(mem, self_mirror="off"),  # no slice's own mirror on cross-sections
        "mirror-ungated": replace(mem, self_mirror="geo"),
        "mirror-gate1": replace(mem, mirror_gate_power=1.0),
        # the mirror's patches from the slice's own features and the fitted flip map, not a second forward pass
        "mirror-features": replace(mem, mirror_pass="features"),
        "mirror-image": replace(mem, mirror_pass="image"),
        "through-plane-off": replace(mem, through_plane="off"),  # same-study sets: each slice its own score
        "no-guided": replace(mem, guided_radius=0, smoothing_sigma=4.0),  # the map smoothed only, as before
        "flair": replace(mem, sequence="FLAIR"),  # as a series that says FLAIR: the hyperintensity gate on
        "flair-gate-off": replace(mem, sequence="FLAIR", hyperintensity_gate=0.0),
        "flair-intensity4": replace(mem, sequence="FLAIR", intensity_weight=4.0),  # the intensity term on top of the gate
        "intensity4": replace(mem, intensity_weight=4.0),
        "as-section": replace(mem, modality="MR"),  # the image kind forced, not taken from the references' shape
        "as-radiograph": replace(mem, modality="DX"),
        "score-local_max": replace(mem, image_score="local_max"),
        "score-mean": replace(mem, image_score="mean"),
        "memory-contrast1": replace(mem, image_score_contrast=1.0),
        "memory-contrast0.5": replace(mem, image_score_contrast=0.5),
        "adapted-contrast1": replace(ad, image_score_contrast=1.0),
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
    ap.add_argument("--sample-data", type=Path, default=REPO.parent / "shared" / "sample-data",
                    help="for lgg-same: the folder holding lgg-flair/")
    ap.add_argument("--sets", default="lgg,lgg-same,cxr,flair")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--variants", default="memory")
    ap.add_argument("--folds", default="", help="only folds whose name contains one of these (comma-separated)")
    ap.add_argument("--patients", type=int, default=None, help="same-study sets: only the first N patients")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--feature-cache", type=Path, default=None,
                    help="a folder caching the frozen backbone's outputs (float16) across runs: see feature_cache.py")
    args = ap.parse_args()
    if args.feature_cache:
        import feature_cache

        feature_cache.install(args.feature_cache)
    seeds = [int(s) for s in args.seeds.split(",")]
    all_v = variants(DetectorSettings())
    names = list(all_v) if args.variants == "all" else args.variants.split(",")
    unknown = [n for n in names if n not in all_v]
    if unknown:
        sys.exit(f"unknown variants {unknown}; known: {', '.join(all_v)}")
    sets = args.sets.split(",")
    bad = [s for s in sets if s not in SETS and s not in SAME_STUDY_SETS]
    if bad:
        sys.exit(f"unknown sets {bad}; known: {', '.join([*SETS, *SAME_STUDY_SETS])}")
    device = resolve_device("auto")
    backbone = load_backbone(DetectorSettings().backbone, device=device)
    print(f"{backbone.name} ({backbone.weights}) on {device}; k={args.k}; seeds {seeds}", flush=True)
    table: dict = {}
    summary: dict = {}
    for set_name in sets:
        if set_name in SAME_STUDY_SETS:
            import same_study

            for name in names:
                t0 = time.monotonic()
                res = same_study.run(all_v[name], SAME_STUDY_SETS[set_name], args.k, seeds, 4, args.sample_data,
                                     backbone, device, args.patients, verbose=False)
                table.setdefault(name, {})[set_name] = res
                summary.setdefault(name, {})[set_name] = {"mean": res["mean"], "worst": res["worst"]}
                print(f"{name:18s} {set_name:8s} k={args.k} {same_study.fmt(res)}  ({time.monotonic() - t0:.0f}s)",
                      flush=True)
            continue
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
            print(f"{name:18s} {set_name:8s} k={args.k} {_fmt(rows, 'image_auroc')}  {_fmt(rows, 'pixel_auroc')}  "
                  f"fit {fit:.1f}s  stops {','.join(stops)}  ({time.monotonic() - t0:.0f}s)", flush=True)
            summary.setdefault(name, {})[set_name] = {
                key: {"mean": _mean(rows, key), "worst": _worst(rows, key),
                      "fold_means": [_mean([r], key) for r in rows]} for key in ("image_auroc", "pixel_auroc")}
    if args.json:
        args.json.write_text(json.dumps(table, indent=1, default=_jsonable))
    print(json.dumps({"backbone": backbone.name, "weights": backbone.weights, "k": args.k, "seeds": seeds,
                      "results": summary}, default=_jsonable))


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [s[key] for r in rows for s in r["per_seed"] if s[key] is not None]
    return float(np.mean(vals)) if vals else None


def _worst(rows: list[dict], key: str) -> float | None:
    vals = [s[key] for r in rows for s in r["per_seed"] if s[key] is not None]
    return float(min(vals)) if vals else None


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    return str(o)


if __name__ == "__main__":
    main()
