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
from typing import Any, TextIO

from . import __version__

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
        print(json.dumps(study_to_json(study), indent=2, default=_json_default))
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
        "errors": [{"path": e.path, "message": e.message} for e in study.errors],
    }


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


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
        lines.extend(f"  {e.message}" for e in study.errors)
    text = "\n".join(lines) + "\n"
    # A console that cannot show a character of a description must not end in a traceback.
    encoding = getattr(out, "encoding", None) or "utf-8"
    out.write(text.encode(encoding, "replace").decode(encoding, "replace"))


# ---------------------------------------------------------------------------------------------
# registry and dispatch

# Name -> parser registration. Other commands (score, eval, report) register here.
SUBCOMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "info": _add_info_parser,
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
    except SystemExit as exc:  # argparse's --help, --version and usage errors
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
