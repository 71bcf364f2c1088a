"""`medad-viewer report SCORE_DIR --out report.pdf [...]`: the exports of a scoring run folder, from the command line.

Registered by cli.py through `add_report_parser(subparsers)`; `write_report_for_score_dir` serves `score --report`.
The command line lives here, beside cli.py; `report/` makes the exports and parses no arguments.
Errors are one plain line on stderr and an exit status (1: the export failed, 2: bad input), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .report.data import ReportData, ReportError, SourceUnavailable, load_review_file, load_target_series
from .report.score_dir import ScoreRun, read_score_dir

PROG = "medad-viewer report"


def add_report_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report", help="write the PDF report (and CSV/JSON tables, map volumes) of a scoring run",
        description="Write the exports of a scoring run folder (made by `medad-viewer score --out DIR`): a PDF "
                    "heatmap report, per-slice score tables, the anomaly maps and annotations as volumes on the "
                    "source series' grid, and for DICOM series a DICOM Segmentation and Parametric Map. Exports are "
                    "de-identified unless --include-identifiers is given (the DICOM objects keep the source UIDs "
                    "either way, so that viewers can lay them over the original images). "
                    "Exit status: 0 done, 1 an export failed, 2 bad arguments or an unusable run folder.")
    p.add_argument("score_dir", help="folder with run.json, scores.csv and maps.npy")
    p.add_argument("--out", default=None, metavar="PDF", help="write the PDF report here")
    p.add_argument("--csv", nargs="?", const="", default=None, metavar="CSV",
                   help="also write the score table as CSV (beside the PDF when no path is given)")
    p.add_argument("--json", nargs="?", const="", default=None, metavar="JSON",
                   help="also write the score table as JSON (beside the PDF when no path is given)")
    p.add_argument("--maps", default=None, metavar="VOLUME",
                   help="also write the anomaly maps as a volume (.nii.gz, .nii, .nrrd or .mha)")
    p.add_argument("--annotations", default=None, metavar="VOLUME",
                   help="also write the reviewer's annotations (from --review) as a label volume")
    p.add_argument("--dicom-seg", default=None, metavar="SEG_DCM",
                   help="also write a DICOM Segmentation referencing the source DICOM series: the map region above "
                        "--threshold (AUTOMATIC segment) and, with --review, the confirmed findings' annotations "
                        "(MANUAL segment)")
    p.add_argument("--dicom-pmap", default=None, metavar="MAP_DCM",
                   help="also write the anomaly maps of the scored slices as a DICOM Parametric Map referencing the "
                        "source DICOM series")
    p.add_argument("--review", default=None, metavar="REVIEW_JSON",
                   help="the viewer's session.json (or a review file) with decisions, notes and annotations")
    p.add_argument("--threshold", type=float, default=None, metavar="P",
                   help="flag slices at or above this percentile of normal and colour the heatmap from it "
                        "(default: the run's, usually 99)")
    p.add_argument("--flag-at", type=float, default=None, metavar="P",
                   help="flag slices at a different percentile of normal slices than the heatmap's --threshold")
    p.add_argument("--include-identifiers", action="store_true",
                   help="show patient name, ID and birth date (default: de-identified, pseudonymous study label)")
    p.add_argument("--source", default=None, metavar="PATH",
                   help="where the scored study is now, if it moved since scoring")
    p.add_argument("--window", default=None, metavar="CENTER,WIDTH",
                   help="display window for the report images (default: the viewer's default for the series)")
    p.add_argument("--colormap", default=None, help="overlay colour map (default inferno)")
    p.add_argument("--opacity", type=float, default=None, help="overlay opacity 0..1 (default 0.6)")
    p.set_defaults(func=run_report)
    return p


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


def _progress():
    last = [""]

    def report(fraction: float, message: str) -> None:
        if message != last[0]:
            last[0] = message
            print(f"  [{int(fraction * 100):3d}%] {message}", file=sys.stderr, flush=True)
    return report


def load_run(score_dir: str | os.PathLike) -> ScoreRun:
    """read_score_dir with plain-words errors (ReportError) for a missing, unfinished or damaged folder."""
    root = Path(score_dir)
    if not root.is_dir():
        raise ReportError(f"no scoring run folder at {root}")
    if not (root / "run.json").is_file():
        raise ReportError(f"{root} is not a finished scoring run (run.json is missing; did `score` complete?)")
    for name in ("scores.csv", "maps.npy"):
        if not (root / name).is_file():
            raise ReportError(f"{root} is incomplete: {name} is missing")
    try:
        run = read_score_dir(root)
    except (ValueError, KeyError, OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{root} is damaged ({exc})") from None
    if not isinstance(run.run, dict) or not run.run.get("target"):
        raise ReportError(f"{root}/run.json does not say which series was scored (no 'target')")
    return run


def _beside(pdf: str | None, value: str | None, suffix: str, score_dir: str) -> str | None:
    if value is None:
        return None
    if value:
        return value
    base = Path(pdf) if pdf else Path(score_dir) / "scores.pdf"
    return str(base.with_suffix(suffix))


def run_report(args: argparse.Namespace) -> int:
    from .engine.jobs import Cancelled

    csv_path = _beside(args.out, args.csv, ".csv", args.score_dir)
    json_path = _beside(args.out, args.json, ".json", args.score_dir)
    dicom = [p for p in (args.dicom_seg, args.dicom_pmap) if p]
    if not any((args.out, csv_path, json_path, args.maps, args.annotations, *dicom)):
        return _fail("nothing to write: give --out report.pdf and/or --csv, --json, --maps, --annotations, "
                     "--dicom-seg, --dicom-pmap", 2)
    if args.annotations and not args.review:
        return _fail("--annotations needs --review REVIEW_JSON (the annotations live in the review)", 2)
    if args.opacity is not None and not 0.0 <= args.opacity <= 1.0:
        return _fail("--opacity must be between 0 and 1", 2)
    if args.threshold is not None and not 0.0 < args.threshold < 100.0:
        return _fail("--threshold is a percentile of normal, between 0 and 100 (e.g. 99)", 2)
    if args.flag_at is not None and not 0.0 < args.flag_at < 100.0:
        return _fail("--flag-at is a percentile of normal, between 0 and 100 (e.g. 95)", 2)
    window = None
    if args.window:
        try:
            c, w = (float(v) for v in args.window.split(","))
            if w <= 0:
                raise ValueError
            window = (c, w)
        except ValueError:
            return _fail(f"--window must be CENTER,WIDTH with a positive width (e.g. 40,400), not {args.window!r}", 2)
    try:
        run = load_run(args.score_dir)
    except ReportError as exc:
        return _fail(str(exc), 2)

    series = None
    needs_images = bool(args.out)
    try:
        series = load_target_series(run, args.source)
    except SourceUnavailable as exc:
        if needs_images:
            return _fail(f"{exc} (the PDF report needs the images)", 2)
        if dicom:
            return _fail(f"{exc} (the DICOM exports reference the source files)", 2)
        if args.include_identifiers:
            print(f"{PROG}: warning: {exc}; identifiers cannot be included", file=sys.stderr)
    uid = str(run.run["target"].get("uid", ""))
    review = None
    if args.review:
        try:
            review, warning = load_review_file(args.review, uid)
        except ReportError as exc:
            return _fail(str(exc), 2)
        if warning:
            print(f"{PROG}: warning: {warning}", file=sys.stderr)
    if dicom:
        from .report.dicom_objects import NotDicomSeries, require_dicom

        try:
            require_dicom(series)
        except NotDicomSeries as exc:
            return _fail(str(exc), 2)
    data = ReportData.build(run, series, review, threshold_pct=args.threshold,
                            include_identifiers=args.include_identifiers, flag_pct=args.flag_at)
    written: list[str] = []
    try:
        if args.out:
            from .report.pdf import PdfOptions, write_pdf_report

            opts = PdfOptions()
            if window is not None:
                opts.window, opts.window_name = window, "custom"
            if args.colormap:
                from .report.overlay import COLORMAPS

                if args.colormap not in COLORMAPS:
                    return _fail(f"--colormap must be one of {', '.join(COLORMAPS)}", 2)
                opts.cmap = args.colormap
            if args.opacity is not None:
                opts.opacity = args.opacity
            print(f"Writing {args.out}", file=sys.stderr)
            written.append(str(write_pdf_report(data, args.out, opts, _progress())))
        if csv_path:
            from .report.tables import write_scores_csv

            written.append(str(write_scores_csv(data, csv_path)))
        if json_path:
            from .report.tables import write_scores_json

            written.append(str(write_scores_json(data, json_path)))
        if args.maps:
            from .report.volumes import write_map_volume

            written.append(str(write_map_volume(data, args.maps)))
        if args.annotations:
            from .report.volumes import write_annotation_volume

            written.append(str(write_annotation_volume(data, args.annotations)))
        if args.dicom_seg:
            from .report.dicom_objects import write_dicom_seg

            written.append(str(write_dicom_seg(data, args.dicom_seg)))
        if args.dicom_pmap:
            from .report.dicom_objects import write_dicom_pmap

            written.append(str(write_dicom_pmap(data, args.dicom_pmap)))
    except ReportError as exc:
        return _fail(str(exc), 1)
    except OSError as exc:
        return _fail(f"could not write {exc.filename or 'the output'}: {exc.strerror or exc}", 1)
    except (KeyboardInterrupt, Cancelled):
        return _fail("interrupted; no partial file was left", 130)
    flagged = len(data.flagged)
    print(f"{flagged} flagged slice{'s' if flagged != 1 else ''} of {len(data.rows)} scored "
          f"(flagged at the {data.flag_pct:g}th percentile of normal); "
          f"{'with identifiers' if args.include_identifiers else 'de-identified'}", file=sys.stderr)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def write_report_for_score_dir(score_dir: str | os.PathLike, pdf_path: str | os.PathLike, *,
                               include_identifiers: bool = False, threshold_pct: float | None = None) -> Path:
    """For `medad-viewer score ... --report report.pdf`: the PDF of a run folder just written.

    Raises SystemExit with a one-line message when it cannot be made (the CLI's way of failing without a traceback).
    """
    from .report.pdf import write_pdf_report

    try:
        run = load_run(score_dir)
        series = load_target_series(run)
        data = ReportData.build(run, series, None, threshold_pct=threshold_pct,
                                include_identifiers=include_identifiers)
        return write_pdf_report(data, pdf_path, progress=_progress())
    except ReportError as exc:
        raise SystemExit(f"error: report: {exc}") from None
    except OSError as exc:
        raise SystemExit(f"error: report: could not write {exc.filename or pdf_path}: {exc.strerror or exc}") from None
