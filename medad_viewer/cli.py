"""Command line: `medad-viewer [PATH] [--demo]` opens the viewer; `medad-viewer info PATH` describes a study.

Each subcommand is a `cmd_<name>(args) -> int` function registered by an `_add_<name>_parser`
helper listed in SUBCOMMANDS. argparse cannot mix an optional positional PATH with
subcommands, so `main` dispatches on the first argument: a known subcommand name goes to the
subcommand parser, anything else to the viewer's own `[PATH] [--demo]` parser.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from .engine.defaults import DEFAULT_METHOD, KIND_WORDS
from .io.atomic import json_default

PROG = "medad-viewer"


# ---------------------------------------------------------------------------------------------
# info


def _add_info_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        help="list the series found in a file or folder",
        description="List the image series found in a file or folder (DICOM, NIfTI, NRRD, MetaImage, "
        "PNG/JPEG/TIFF/BMP), with size, spacing, warnings and files that could not be read. "
        "Patient-identifying tags are never printed. Exit status: 0 when something loaded, "
        "1 when nothing could be loaded, 2 for a missing path or bad arguments.",
    )
    p.add_argument("path", help="file or folder to inspect")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    from .io import load_study

    path = args.path
    if not os.path.exists(path):
        print(f"{PROG} info: no such file or folder: {path}", file=sys.stderr)
        return 2
    study = load_study(path)
    if args.json:
        print(json.dumps(study_to_json(study), indent=2, default=json_default))
    else:
        _print_table(study, sys.stdout)
    return 0 if study.series else 1


def study_to_json(study: Any) -> dict[str, Any]:
    """The `info --json` object: series (no identifying tags) and errors."""
    return {
        "source": study.source,
        "series": [
            {
                "uid": s.uid,
                "modality": s.modality,
                "description": s.description,
                "num_slices": s.num_slices,
                "rows": s.rows,
                "columns": s.columns,
                "spacing": [float(v) for v in s.spacing],
                "source": s.source,
                "is_volume": s.is_volume,
                "origin": [float(v) for v in s.origin],
                "direction": [float(v) for v in s.direction],
                "slice_thickness": s.slice_thickness,
                "file_window": list(s.file_window) if s.file_window else None,
                "photometric": s.photometric,
                "dtype": str(s.volume().dtype),
                "metadata": s.metadata,
                "warnings": list(s.warnings),
            }
            for s in study.series
        ],
        "errors": [{"path": e.path, "message": e.message, "advice": e.advice} for e in study.errors],
    }


def _print_table(study: Any, out: TextIO) -> None:
    def fmt(v: float) -> str:
        return f"{v:.3f}".rstrip("0").rstrip(".")

    rows = [("#", "Modality", "Slices", "Size", "Spacing (mm)", "Description")]
    for i, s in enumerate(study.series, 1):
        rows.append((
            str(i),
            s.modality,
            str(s.num_slices),
            f"{s.columns} x {s.rows}",
            " x ".join(fmt(v) for v in s.spacing),
            s.description,
        ))
    lines = [study.source]
    if study.series:
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
        for r in rows:
            lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1])
        for i, s in enumerate(study.series, 1):
            for w in s.warnings:
                lines.append(f"  warning (series {i}): {w}")
    else:
        lines.append("  no series could be loaded")
    if study.errors:
        lines.append("not loaded:")
        lines.extend(f"  {e.full}" for e in study.errors)
    text = "\n".join(lines) + "\n"
    # A console that cannot show a character of a description must not end in a traceback.
    encoding = getattr(out, "encoding", None) or "utf-8"
    out.write(text.encode(encoding, "replace").decode(encoding, "replace"))


# ---------------------------------------------------------------------------------------------------- score / eval
def _stderr_progress(prefix: str = ""):
    """Progress lines on stderr, at most one per percent step, so logs stay readable."""
    last = [-1]

    def report(fraction: float, message: str) -> None:
        pct = int(fraction * 100)
        if pct != last[0]:
            last[0] = pct
            print(f"{prefix}[{pct:3d}%] {message}", file=sys.stderr, flush=True)
    return report


def reference_slices(specs: Sequence[str]) -> list:
    """--refs SOURCE[:SLICES] specs -> engine.pipeline.SliceRef of the first series of each source (a source given
    twice is read once); an unreadable source or a bad slice list ends the command with a plain error."""
    from .engine.pipeline import SliceRef
    from .engine.series_scores import parse_slices, split_reference_spec
    from .io import load_study

    studies: dict[str, object] = {}
    out = []
    for spec in specs:
        source, slices = split_reference_spec(spec)
        key = str(Path(source).resolve())
        if key not in studies:
            studies[key] = load_study(source)
        series = _pick_series(studies[key], None, source)
        try:
            idx = parse_slices(slices, series.num_slices)
        except ValueError as exc:
            raise SystemExit(f"error: --refs {spec}: {exc}")
        out.extend(SliceRef(series, i) for i in idx)
    return out


def reference_records(references) -> list[dict]:
    """What run.json records of each reference slice."""
    return [{"source": str(r.series.source), "series_uid": r.series.uid, "index": int(r.index)} for r in references]


def _pick_series(study, selector: str | None, what: str):
    if not study.series:
        detail = "; ".join(f"{e.path}: {e.message}" for e in study.errors[:3]) or "no images found"
        raise SystemExit(f"error: nothing could be loaded from {what} ({detail})")
    if selector is None:
        return study.series[0]
    for i, s in enumerate(study.series):
        if selector == str(i) or selector == s.uid:
            return s
    raise SystemExit(f"error: {what} has no series {selector!r} (it has {len(study.series)}: "
                     + ", ".join(f"{i}={s.uid}" for i, s in enumerate(study.series)) + ")")


def _add_score_parser(sub) -> None:
    p = sub.add_parser("score", help="adapt on normal reference slices and score every slice of a series",
                       description="Fit a detector on normal reference slices (SOURCE[:SLICES], e.g. study/:0,3,7-9) "
                                   "and write DIR/scores.csv, DIR/maps.npy and DIR/run.json.")
    p.add_argument("target", help="study (file or folder) to score")
    p.add_argument("--refs", action="append", required=True, metavar="SOURCE[:SLICES]",
                   help="normal references; repeat for several sources; SLICES like 0,3,7-9 (all slices if omitted)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", choices=("memory", "adapted", "zero"), default=DEFAULT_METHOD,
                   help=f"default {DEFAULT_METHOD}: the training-free memory bank (see the README for measurements)")
    p.add_argument("--backbone", default="efficientnet-lite2",
                   help="efficientnet-lite2 (default, offline), or an open_clip architecture such as ViT-B-16, "
                        "ViT-L-14-336, hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
    p.add_argument("--weights", default=None, help="pretrained tag (e.g. openai) or a local checkpoint file")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--series", default=None, help="which series of TARGET (index or UID; default the first)")
    p.add_argument("--slices", default="", help="score only these slices of the target (default all)")
    p.add_argument("--time-budget", type=float, default=None, help="adaptation time budget in seconds")
    p.add_argument("--input-size", type=int, default=None,
                   help="backbone input size for CNN backbones (default 256; smaller is faster and coarser)")
    p.add_argument("--report", default=None, metavar="PDF", help="also write a PDF report here")
    p.set_defaults(func=cmd_score)


def cmd_score(args) -> int:
    import time
    from dataclasses import replace

    from .engine.backbones import WeightsUnavailable, describe_device, load_backbone, resolve_device
    from .engine.detector import DetectorSettings
    from .engine.pipeline import fit_and_score
    from .engine.series_scores import parse_slices
    from .io import load_study, series_sequence
    from .report.score_dir import ScoreRun, run_record, write_score_dir

    t_start = time.monotonic()
    target_study = load_study(args.target)
    target = _pick_series(target_study, args.series, args.target)
    try:
        indices = parse_slices(args.slices, target.num_slices)
    except ValueError as exc:
        raise SystemExit(f"error: --slices: {exc}")
    references = reference_slices(args.refs)
    ref_records = reference_records(references)
    if not 1 <= len(references) <= 64:
        raise SystemExit(f"error: {len(references)} reference slices; pick between 1 and 16 normal slices (64 at most)")
    try:
        device = resolve_device(args.device)
    except RuntimeError as exc:
        raise SystemExit(f"error: {exc}")
    settings = DetectorSettings(method=args.method, backbone=args.backbone, weights=args.weights,
                                modality=target.modality, sequence=series_sequence(target),
                                input_size=args.input_size)
    settings = replace(settings, adapt=replace(settings.adapt, seed=args.seed,
                                               **({"time_budget_s": args.time_budget} if args.time_budget else {})))
    try:
        backbone = load_backbone(settings.backbone, settings.weights, device=device)
    except WeightsUnavailable as exc:
        raise SystemExit(f"error: {exc}")
    if not backbone.pretrained:
        print(f"WARNING: {backbone.name} runs with {backbone.weights}: its maps mean nothing clinically.",
              file=sys.stderr)
    print(f"{backbone.name} ({backbone.weights}) on {describe_device(device)}; {len(references)} references; "
          f"method {settings.method}", file=sys.stderr)
    t_load = time.monotonic()
    try:
        done = fit_and_score(references, target, settings, indices=indices, backbone=backbone, device=device,
                             progress=_stderr_progress())
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")
    detector, scores = done.detector, done.scores
    ordered = sorted(scores.results)
    run = run_record(detector, target, ref_records, {
        "load_s": round(t_load - t_start, 3), "fit_s": round(detector.timings.get("fit_s", 0.0), 3),
        "adapt_s": round(detector.timings.get("adapt_s", 0.0), 3), "score_s": round(done.score_seconds, 3),
        "score_s_per_slice": round(done.score_seconds / max(1, len(ordered)), 4)})
    out = write_score_dir(args.out, ScoreRun.of(
        [scores.results[i] for i in ordered], [target.slice_position(i) for i in ordered], run))
    top = sorted(ordered, key=lambda i: -scores.results[i].score)[:5]
    print(f"scored as {KIND_WORDS.get(detector.kind, detector.kind)}", file=sys.stderr)
    print(f"wrote {out}/scores.csv, maps.npy, run.json; highest: "
          + ", ".join(f"slice {i} ({scores.results[i].percentile:.1f} pct)" for i in top), file=sys.stderr)
    if args.report:
        from .cli_report import write_report_for_score_dir
        write_report_for_score_dir(out, args.report)
        print(f"wrote {args.report}", file=sys.stderr)
    return 0


def _add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="few-shot evaluation on a BMAD / MVFA-AD folder layout",
                       description="Pick K references per seed from DATA_DIR/train/good/img, score DATA_DIR/test, "
                                   "print image/pixel AUROC, AUPRO and F1-max (mean, min and max over seeds).")
    p.add_argument("data_dir")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--method", choices=("memory", "adapted", "zero"), default=DEFAULT_METHOD,
                   help=f"default {DEFAULT_METHOD}: the training-free memory bank (see the README for measurements)")
    p.add_argument("--backbone", default="efficientnet-lite2")
    p.add_argument("--weights", default=None)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--modality", default="OT", help="modality of the images (CT, MR, CR, DX, ...): CR/DX/MG score "
                                                    "them as radiographs, CT/MR as cross-sections, OT decides from "
                                                    "the references' shape")
    p.add_argument("--sequence", default=None, choices=("FLAIR",),
                   help="the MR sequence of the images when known (FLAIR adds the intensity term)")
    p.add_argument("--input-size", type=int, default=None, help="backbone input size for CNN backbones")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from .engine.backbones import WeightsUnavailable
    from .engine.detector import DetectorSettings
    from .engine.evaluate import METRIC_KEYS, evaluate

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"error: --seeds must be integers like 0,1,2, not {args.seeds!r}")
    settings = DetectorSettings(method=args.method, backbone=args.backbone, weights=args.weights,
                                modality=args.modality, sequence=args.sequence, input_size=args.input_size)
    try:
        result = evaluate(args.data_dir, args.k, seeds, settings, device=args.device, progress=_stderr_progress())
    except (ValueError, FileNotFoundError, WeightsUnavailable, RuntimeError) as exc:
        raise SystemExit(f"error: {exc}")
    if args.json:
        print(json.dumps(_nan_to_none(result), default=_json_safe, allow_nan=False))
    else:
        for key in METRIC_KEYS:
            v = result[key]
            spread = "" if v is None else f"  (min {result[key + '_min']:.3f}, max {result[key + '_max']:.3f})"
            print(f"{key:12s} {'n/a' if v is None else f'{v:.3f}'}{spread}")
        print(f"adapt {result['adapt_s']:.1f} s, score {result['score_s_per_image'] * 1000:.0f} ms/image; "
              f"{result['backbone']} ({result['weights']}), method {result['method']}, k={result['k']}, "
              f"seeds {result['seeds']}")
    return 0


def _nan_to_none(o):
    """NaN is not JSON: metrics that cannot be computed (one class only) become null."""
    import math
    if isinstance(o, float):
        return None if math.isnan(o) else o
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_nan_to_none(v) for v in o]
    return o


def _json_safe(o):
    import math
    if isinstance(o, float) and math.isnan(o):
        return None
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def _add_batch_parser(sub) -> None:
    from .cli_batch import add_batch_parser

    add_batch_parser(sub)


def _add_report_parser(sub) -> None:
    from .cli_report import add_report_parser
    add_report_parser(sub)


# ---------------------------------------------------------------------------------------------
# registry and dispatch

# Name -> parser registration. Other commands (score, eval, report) register here.
SUBCOMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "info": _add_info_parser,
    "score": _add_score_parser,
    "eval": _add_eval_parser,
    "report": _add_report_parser,
    "batch": _add_batch_parser,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Few-shot anomaly detection viewer for medical images.",
        epilog=f"Without a command, `{PROG} [PATH] [--demo]` opens the viewer "
        "(on PATH, or on the bundled demo study).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS.values():
        add(subparsers)
    return parser


def build_gui_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} [PATH] [--demo] | {PROG} COMMAND ...",
        description="Open the viewer, optionally on a study (file or folder) or on the demo study. "
        f"Commands: {', '.join(SUBCOMMANDS)} (see `{PROG} COMMAND --help`).",
    )
    parser.add_argument("path", nargs="?", help="study file or folder to open")
    parser.add_argument("--demo", action="store_true", help="open the bundled demo study")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


def cmd_gui(args: argparse.Namespace) -> int:
    """Open the desktop viewer. Imported lazily: `info` and friends must work without Qt."""
    if args.path is not None and not os.path.exists(args.path):
        print(f"{PROG}: no such file or folder: {args.path}", file=sys.stderr)
        return 2
    try:
        from .gui.app import run_app
    except ImportError as exc:
        print(
            f"{PROG}: the desktop viewer could not be started ({exc}). "
            f"Command-line tools still work: {PROG} {' | '.join(SUBCOMMANDS)} --help",
            file=sys.stderr,
        )
        return 1
    return int(run_app(path=args.path, demo=args.demo) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (argparse errors give 2, --help gives 0)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list and args_list[0] in SUBCOMMANDS:
            args = build_parser().parse_args(args_list)
            return int(args.func(args))
        if args_list and args_list[0] in ("-h", "--help"):
            build_gui_parser().print_help()
            print()
            build_parser().print_help()
            return 0
        return cmd_gui(build_gui_parser().parse_args(args_list))
    except SystemExit as exc:  # argparse's --help, --version and usage errors; our own "error: ..." exits
        code = exc.code
        if isinstance(code, str):
            print(f"{PROG}: {code}", file=sys.stderr)
            return 2
        return code if isinstance(code, int) else (0 if code is None else 2)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
