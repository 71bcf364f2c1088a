"""The one atomic writer every layer uses: nothing half-written, suffix kept for format-by-extension writers."""

import os
import stat

import pytest

from medad_viewer.engine.jobs import CancelToken, Cancelled
from medad_viewer.io.atomic import atomic_output, atomic_write_bytes, atomic_write_json, suffix_of


def test_temporary_name_keeps_compound_suffix(tmp_path):
    seen = []
    with atomic_output(tmp_path / "maps.nii.gz") as tmp:
        seen.append(tmp)
        open(tmp, "wb").write(b"x")
    assert seen[0].endswith(".nii.gz") and os.path.dirname(seen[0]) == str(tmp_path)
    assert (tmp_path / "maps.nii.gz").read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.nii.gz"]
    assert suffix_of("A/B/Report.PDF") == ".pdf" and suffix_of("x.tar") == ".tar"


def test_cancel_before_the_move_leaves_the_old_file(tmp_path):
    target = tmp_path / "scores.csv"
    target.write_text("old")
    token = CancelToken()
    with pytest.raises(Cancelled):
        with atomic_output(target, token) as tmp:
            open(tmp, "w").write("new")
            token.cancel()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]


def test_existing_file_keeps_its_mode_and_new_files_are_not_owner_only(tmp_path):
    target = tmp_path / "run.json"
    atomic_write_json(target, {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # what any new file gets, not mkstemp's 0600
    os.chmod(target, 0o640)
    atomic_write_bytes(target, b"{}")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and target.read_bytes() == b"{}"
