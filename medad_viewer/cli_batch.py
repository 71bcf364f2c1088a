"""`medad-viewer batch`: score every series of a folder or archive on Dask and write a worklist (medad_viewer/batch).

    medad-viewer batch ROOT --refs STUDY:4,6,8,20 [--refs CT_STUDY:3,9 | --refs set.json] --out RESULTS
                       [--workers N | --scheduler ADDRESS] [--rescore] [--include-identifiers]

`--refs` takes what `score --refs` takes, or a reference set saved from the window (a .json file); give it once per
modality: the references' modality decides which series they score. Series of a modality without references get a
row that says so.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from .engine.defaults import DEFAULT_METHOD


def add_batch_parser(sub) -> None:
    p = sub.add_parser("batch", help="score every series under a folder on Dask and write a ranked worklist",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="folder (or archive folder) of studies: DICOM folders, volumes, images")
    p.add_argument("--refs", action="append", required=True, metavar="SOURCE[:SLICES] | SET.json",
                   help="normal references, once per modality: a study and its slices, or a saved reference set")
    p.add_argument("--out", required=True, help="results folder (worklist.csv, worklist.json, series/)")
    p.add_argument("--workers", type=int, default=1, help="local Dask workers (processes; default 1)")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler instead of local workers")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: cores / workers)")
    p.add_argument("--method", choices=("memory", "adapted"), default=DEFAULT_METHOD)
    p.add_argument("--backbone", default="efficientnet-lite2")
    p.add_argument("--weights", default=None)
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--rescore", action="store_true", help="score series already scored with these references too")
    p.add_argument("--include-identifiers", action="store_true",
                   help="study paths and series descriptions in the worklist (default: pseudonyms, as the reports)")
    p.set_defaults(func=cmd_batch)


def reference_groups(specs: list[str]) -> dict[str, list]:
    """--refs specs -> modality -> [engine.pipeline.SliceRef]; each spec's series decides its modality. A spec is
    `score`'s SOURCE[:SLICES] (cli.reference_slices) or a reference set saved from the window (.json)."""
    from .cli import reference_slices
    from .engine.pipeline import SliceRef
    from .io import load_study
    from .review.references import ReferenceSet, resolve_series

    groups: dict[str, list] = {}
    studies: dict[str, object] = {}
    for spec in specs:
        if spec.lower().endswith(".json") and Path(spec).is_file():
            rs = ReferenceSet.load(spec)
            for r in rs.normals():
                if r.source not in studies:
                    studies[r.source] = load_study(r.source)
                series = resolve_series(r, studies)
                if series is None:
                    raise SystemExit(f"error: --refs {spec}: slice {r.index + 1} of {r.source} was not found")
                groups.setdefault((series.modality or "OT").upper(), []).append(SliceRef(series, r.index))
            continue
        for ref in reference_slices([spec]):
            groups.setdefault((ref.series.modality or "OT").upper(), []).append(ref)
    return groups


def fit_groups(groups: dict[str, list], args) -> dict[str, tuple]:
    """modality -> (fitted detector, its key, the references as records): fitted here once per modality."""
    from dataclasses import replace

    from .engine.backbones import load_backbone, resolve_device
    from .engine.detector import DetectorSettings, pixels_hash
    from .cli import reference_records
    from .engine.pipeline import fit_detector, read_references
    from .io import series_sequence

    device = resolve_device("cpu")
    base = DetectorSettings(method=args.method, backbone=args.backbone, weights=args.weights,
                            input_size=args.input_size)
    backbone = load_backbone(base.backbone, base.weights, device=device)
    out = {}
    for modality, refs in groups.items():
        settings = replace(base, modality=modality, sequence=series_sequence(refs[0].series))
        normals, _ = read_references(refs)
        det = fit_detector(normals, settings, backbone, device)
        key = hashlib.sha256(json.dumps({"pixels": [pixels_hash(im) for im in normals], "weights": backbone.weights_id,
                                         "settings": settings.to_dict()}, sort_keys=True).encode()).hexdigest()[:16]
        out[modality] = (det, key, reference_records(refs))
        print(f"{modality}: fitted on {len(normals)} references ({backbone.name}, {backbone.weights})",
              file=sys.stderr)
    return out


def cmd_batch(args) -> int:
    import os

    from .batch.run import run_worklist

    groups = reference_groups(args.refs)
    detectors = fit_groups(groups, args)
    threads = args.threads or max(1, (os.cpu_count() or 2) // max(1, args.workers))
    try:
        rows = run_worklist(args.root, detectors, args.out, scheduler=args.scheduler, workers=args.workers,
                            threads_per_worker=threads, rescore=args.rescore,
                            include_identifiers=args.include_identifiers,
                            say=lambda text: print(text, file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        return 130
    scored = sum(r.get("status") == "scored" for r in rows)
    print(f"wrote {args.out}/worklist.csv and worklist.json: {scored} of {len(rows)} series scored",
          file=sys.stderr)
    return 0
