"""Crash safety of the autosave: the real main window is killed (SIGKILL) while a review is being edited, and the
next start must load exactly one of the sessions that were saved, never a broken, empty or mixed one.

    python benchmarks/crash_autosave.py [--trials 100] [--seed 0] [--jobs 2] [--verbose]

Each trial starts this script again with --child, in a fresh app data folder (MEDAD_VIEWER_DATA_DIR) and on a
private copy of the demo study. The child makes a MainWindow (offscreen), opens the study and edits the review at
random (seeded per trial), a few edits a second, as a user does: through the window's actions (Confirm / Dismiss /
Mark unreviewed, Add as normal reference, Undo, Redo, Next / Previous slice) and, for what the panels send (a note
typed, a drawing, Clear drawings, a reference removed from the tray, a slice clicked in the ranking), the viewer
model's public methods those panels call; the first edits are each gesture once, in a random order. It runs the Qt
event loop between edits so the 600 ms autosave timer really fires. It logs, with unbuffered O_APPEND writes that a
SIGKILL cannot lose, every edit (`edit <n> <gesture>`) and every save: `saving <digest> <edits>` before the real
`SessionStore.save` runs and `saved <digest>` after it returns. The digest is a canonical hash of the state that
matters (review state, reference slices (series uid, index, kind), slice index).

The parent waits for the first `saved` line, lets the child edit on for a random 0-4 s, kills it with SIGKILL,
then reads the session back as the app does on its next start and hashes it the same way. Intact: the session
loads and its digest is that of one of the `saving` lines. lost_edits: edits made after the edit count of the
loaded state. stale: intact trials whose state is older than both the last completed save and the one in flight
(should be 0). leftover_temporaries: trials whose data folder holds a temporary of the atomic writer (a kill
mid-write may leave one; harmless). child_tracebacks: trials whose child printed a Python traceback (an exception in
a gesture, which Qt reports and survives; should be 0). Prints one JSON line; --verbose: details of non-intact trials
on stderr.

The child skips the window's device probe (it imports torch in a background thread, which costs seconds of start-up
on a small CPU and has nothing to do with sessions).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEMO = REPO / "resources" / "demo" / "brain1_image.nrrd"

KILL_DELAY_S = (0.0, 4.0)  # after the first completed save
EDIT_GAP_S = (0.1, 0.6)  # between edits: a few a second
CHILD_MAX_S = 20.0  # the child stops by itself after this long (only if the parent died)
START_TIMEOUT_S = 60.0  # the child must have saved once by then


def digest_of(session) -> str:
    """Canonical hash of what a crash must not break: reviews, references and the slice shown."""
    state = {
        "review": session.review.to_dict(),
        "references": [[r.series_uid, int(r.index), r.kind] for r in session.reference_set.references],
        "slice_index": int(session.slice_index),
    }
    blob = json.dumps(state, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


# ================================================================================================== the child
def child(args: argparse.Namespace) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from medad_viewer.gui.app import create_app
    from medad_viewer.gui.main_window import MainWindow
    from medad_viewer.gui.status_controller import StatusController
    from medad_viewer.review.session import SessionStore
    from medad_viewer.review.state import Ellipse, Stroke

    fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def log(line: str) -> None:
        os.write(fd, (line + "\n").encode("utf-8"))

    edits = 0
    real_save = SessionStore.save

    def logged_save(self, session):
        d = digest_of(session)
        log(f"saving {d} {edits}")
        out = real_save(self, session)
        log(f"saved {d}")
        return out

    SessionStore.save = logged_save
    StatusController.probe_device = lambda self: None  # keep the child lean: no torch import

    app = create_app()
    win = MainWindow(QSettings(os.path.join(os.environ["MEDAD_VIEWER_DATA_DIR"], "settings.ini"),
                               QSettings.Format.IniFormat))
    win.show()
    opened: list[str] = []
    win.studyOpened.connect(opened.append)
    win.opening.open_path(args.study)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not opened:
        if time.monotonic() > deadline:
            log("error study did not open")
            return 2
        app.processEvents()
        time.sleep(0.01)
    log("opened")

    rng = random.Random(args.trial_seed)
    model = win.model
    n_slices = model.series.num_slices if model.series is not None else 1
    actions = {a.text(): a for a in win.actions()}

    def act(text: str):
        """The window's action of that name (a KeyError when it is renamed or gone: the script must notice)."""
        a = actions[text]
        return a.trigger

    words = ["lesion", "normal", "artefact", "ring", "ödem", "T2 hyper", "check", "→ PACS", "¿?", "left", "right"]

    def some_shape():
        if rng.random() < 0.6:
            return Ellipse(round(rng.uniform(10, 245), 2), round(rng.uniform(10, 245), 2),
                           round(rng.uniform(2, 40), 2), round(rng.uniform(2, 40), 2))
        pts = tuple((round(rng.uniform(0, 255), 2), round(rng.uniform(0, 255), 2))
                    for _ in range(rng.randint(1, 12)))
        return Stroke(pts, float(rng.choice([2.0, 4.0, 8.0])))

    def note() -> str:
        cur = model.session.review.get(model.series.uid, model.index).note if model.series is not None else ""
        r = rng.random()
        if r < 0.6:  # typing on: one more letter or word
            return cur + rng.choice([rng.choice("abcdefgh éü"), " " + rng.choice(words)])
        if r < 0.75:
            return cur[:-1]  # backspace
        if r < 0.85:
            return ""
        return rng.choice(words)

    # Every action and method is looked up here, before the first edit: one that was renamed stops the child before
    # its first save, and the parent counts the trial as failed.
    decide = [act("Confirm finding"), act("Dismiss"), act("Mark unreviewed")]
    step = [act("Next slice"), act("Previous slice")]
    show_slice, set_note, add_annotation = model.show_slice, model.review.set_note, model.review.add_annotation
    clear_annotations, remove_reference = model.review.clear_annotations, model.references.remove
    gestures = [
        (2, "show_slice", lambda: show_slice(rng.randrange(n_slices))),  # a click in the ranking
        (1, "step_slice", lambda: rng.choice(step)()),
        (3, "set_decision", lambda: rng.choice(decide)()),
        (4, "note", lambda: set_note(note())),  # the Review panel's note field
        (2, "annotate", lambda: add_annotation(some_shape())),  # what the viewer sends for a drawing
        (1, "clear_annotations", clear_annotations),  # the Review panel's Clear button
        (1, "add_reference", act("Add as normal reference")),
        (1, "remove_reference",  # the reference tray's remove
         lambda: remove_reference(rng.randrange(max(1, len(model.session.reference_set))))),
        (1.5, "undo", win.act_undo.trigger),
        (1, "redo", win.act_redo.trigger),
    ]
    weights = [g[0] for g in gestures]
    first = rng.sample(gestures, len(gestures))  # each gesture once, in a random order, then at random

    stop = time.monotonic() + CHILD_MAX_S
    next_edit = time.monotonic() + rng.uniform(*EDIT_GAP_S)
    while time.monotonic() < stop:
        now = time.monotonic()
        if now >= next_edit:
            _w, name, do = first.pop() if first else rng.choices(gestures, weights)[0]
            edits += 1
            log(f"edit {edits} {name}")
            do()
            next_edit = time.monotonic() + rng.uniform(*EDIT_GAP_S)
        app.processEvents()  # the autosave timer fires in here
        time.sleep(0.005)
    log("timeout")
    os._exit(3)  # only when the parent never killed us


# ================================================================================================= the parent
_load_lock = threading.Lock()  # MEDAD_VIEWER_DATA_DIR is process-wide: one read-back at a time


def read_back(study: Path, data: Path):
    """Load the session exactly as the app does on its next start (under this trial's data folder)."""
    from medad_viewer.io import load_study
    from medad_viewer.review.session import SessionStore

    with _load_lock:
        old = os.environ.get("MEDAD_VIEWER_DATA_DIR")
        os.environ["MEDAD_VIEWER_DATA_DIR"] = str(data)
        try:
            store = SessionStore.for_study(load_study(str(study)), str(study))
            return store.load(), [str(p) for p in store.places]
        finally:
            if old is None:
                os.environ.pop("MEDAD_VIEWER_DATA_DIR", None)
            else:
                os.environ["MEDAD_VIEWER_DATA_DIR"] = old


def parse_log(text: str) -> dict:
    saves = []  # [digest, edit count, completed]
    edits = 0
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "edit" and len(parts) >= 2:
            edits = int(parts[1])
        elif parts[0] == "saving" and len(parts) == 3:
            saves.append([parts[1], int(parts[2]), False])
        elif parts[0] == "saved" and len(parts) == 2 and saves and saves[-1][0] == parts[1]:
            saves[-1][2] = True
    return {"saves": saves, "edits": edits}


def run_trial(k: int, seed: int, root: Path) -> dict:
    from medad_viewer.io.atomic import leftover_temporaries

    rng = random.Random(f"{seed}:{k}")
    tdir = root / f"trial-{k:03d}"
    data = tdir / "appdata"
    study_dir = tdir / "study"
    data.mkdir(parents=True)
    study_dir.mkdir()
    study = study_dir / DEMO.name
    shutil.copyfile(DEMO, study)
    logf = tdir / "log.txt"
    logf.touch()
    env = dict(os.environ, MEDAD_VIEWER_DATA_DIR=str(data), QT_QPA_PLATFORM="offscreen",
               OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    out = {"trial": k, "intact": False}
    with open(tdir / "stderr.txt", "wb") as err:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", "--log", str(logf),
                                 "--study", str(study), "--trial-seed", str(rng.randrange(2 ** 31))],
                                env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while "\nsaved " not in "\n" + logf.read_text(encoding="utf-8"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    out["problem"] = f"child never saved (exit {proc.poll()})"
                    break
                time.sleep(0.02)
            else:
                delay = rng.uniform(*KILL_DELAY_S)
                time.sleep(delay)
                out["kill_delay_s"] = round(delay, 3)
                if proc.poll() is not None:
                    out["problem"] = f"child ended by itself before the kill (exit {proc.returncode})"
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    log = parse_log(logf.read_text(encoding="utf-8"))
    out["edits"] = log["edits"]
    out["saves"] = len(log["saves"])
    out["leftovers"] = [str(p.relative_to(data)) for p in leftover_temporaries(data)]
    err_text = (tdir / "stderr.txt").read_text(errors="replace")
    out["child_traceback"] = "Traceback (most recent call last)" in err_text
    if out["child_traceback"]:
        out["stderr"] = err_text[-2000:]
    if "problem" in out:
        out["stderr"] = (tdir / "stderr.txt").read_text(errors="replace")[-2000:]
        return out
    try:
        session, places = read_back(study, data)
    except Exception as exc:  # noqa: BLE001 - anything that stops the next start is a failure
        out["problem"] = f"session could not be loaded: {type(exc).__name__}: {exc}"
        return out
    if session is None:
        out["problem"] = "no session loaded (missing, empty or unreadable)"
        out["files"] = sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file())
        return out
    d = digest_of(session)
    out["digest"] = d
    saves = log["saves"]
    matches = [s for s in saves if s[0] == d]
    if not matches:
        out["problem"] = "loaded state matches none of the saved states (broken or mixed)"
        return out
    out["intact"] = True
    # What the file can legitimately hold: the last completed save, or the one in flight at the kill.
    done = [s for s in saves if s[2]]
    candidates = ([saves[-1]] if not saves[-1][2] else []) + ([done[-1]] if done else [])
    hit = next((s for s in candidates if s[0] == d), None)
    if hit is None:
        out["stale"] = True
        hit = max(matches, key=lambda s: s[1])
    out["loaded_edit_count"] = hit[1]
    out["lost_edits"] = log["edits"] - hit[1]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="trials run at once (children mostly wait between edits)")
    p.add_argument("--verbose", action="store_true", help="details of non-intact trials on stderr")
    p.add_argument("--keep", action="store_true", help="keep the trial folders (printed on stderr)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--log", help=argparse.SUPPRESS)
    p.add_argument("--study", help=argparse.SUPPRESS)
    p.add_argument("--trial-seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    t0 = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="medad-crash-"))
    try:
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            results = list(pool.map(lambda k: run_trial(k, args.seed, root), range(args.trials)))
    finally:
        if args.keep:
            print(f"trial folders kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    intact = [r for r in results if r["intact"]]
    lost = [r["lost_edits"] for r in intact]
    summary = {
        "trials": len(results),
        "intact": len(intact),
        "lost_edits_max": max(lost) if lost else None,
        "lost_edits_mean": round(sum(lost) / len(lost), 3) if lost else None,
        "seconds": round(time.monotonic() - t0, 1),
        "leftover_temporaries": sum(1 for r in results if r["leftovers"]),
        "stale": sum(1 for r in intact if r.get("stale")),
        "child_tracebacks": sum(1 for r in results if r.get("child_traceback")),
        "edits_mean": round(sum(r["edits"] for r in results) / max(1, len(results)), 1),
    }
    if args.verbose:
        for r in results:
            if not r["intact"] or r.get("stale") or r.get("child_traceback"):
                print(json.dumps(r, ensure_ascii=False), file=sys.stderr)
    print(json.dumps(summary))
    return 0 if len(intact) == len(results) and not summary["child_tracebacks"] else 1


if __name__ == "__main__":
    sys.exit(main())
