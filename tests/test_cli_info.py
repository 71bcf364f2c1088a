"""`medad-viewer info`: JSON and table output, exit codes, and the GUI dispatch guard."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from medad_viewer import cli


def _info_json(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, dict]:
    code = cli.main(["info", str(path), "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)  # exactly one JSON document on stdout


def test_info_json_ct(capsys: pytest.CaptureFixture[str], sample_data: Path) -> None:
    code, doc = _info_json(capsys, sample_data / "ct-dicom")
    assert code == 0
    assert doc["errors"] == []
    (s,) = doc["series"]
    assert s["modality"] == "CT"
    assert (s["num_slices"], s["rows"], s["columns"]) == (20, 512, 512)
    assert isinstance(s["spacing"], list) and len(s["spacing"]) == 3
    assert all(isinstance(v, float) for v in s["spacing"])
    assert s["spacing"][2] == pytest.approx(2.0)
    assert s["warnings"] == []
    for key in ("uid", "description", "source"):
        assert isinstance(s[key], str) and s[key]
    assert "PatientName" not in json.dumps(doc)  # identifiers are never printed


def test_info_json_mr_and_xray(capsys: pytest.CaptureFixture[str], sample_data: Path) -> None:
    code, doc = _info_json(capsys, sample_data / "mr-brain")
    assert code == 0
    assert sorted(s["num_slices"] for s in doc["series"] if s["modality"] == "MR") == [23, 25]
    code, doc = _info_json(capsys, sample_data / "xray")
    assert code == 0
    modalities = {s["modality"]: s for s in doc["series"]}
    assert modalities["CR"]["num_slices"] == 1
    assert modalities["OT"]["num_slices"] == 4


def test_info_json_broken_folder(capsys: pytest.CaptureFixture[str], sample_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(sample_data / "ct-dicom", folder)
    victim = sorted(folder.glob("*.dcm"))[3]
    victim.chmod(0o644)
    victim.write_bytes(victim.read_bytes()[:2000])
    (folder / "bad.dcm").write_text("not dicom")
    code, doc = _info_json(capsys, folder)
    assert code == 0  # something loaded
    (s,) = doc["series"]
    assert s["num_slices"] == 19
    assert any(victim.name in w for w in s["warnings"])
    assert [Path(e["path"]).name for e in doc["errors"]] == ["bad.dcm"]
    assert "bad.dcm" in doc["errors"][0]["message"]


def test_info_nothing_loadable_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, doc = _info_json(capsys, tmp_path / "empty")
    assert code == 1 and doc["series"] == [] and len(doc["errors"]) == 1
    (tmp_path / "junk.png").write_bytes(b"\x89PNG garbage")
    assert cli.main(["info", str(tmp_path / "junk.png")]) == 1
    out = capsys.readouterr().out
    assert "junk.png" in out and "Traceback" not in out


def test_info_missing_path_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["info", str(tmp_path / "nope"), "--json"]) == 2
    captured = capsys.readouterr()
    assert "no such file or folder" in captured.err and captured.out == ""
    assert cli.main(["info"]) == 2  # argparse usage error, returned rather than raised
    capsys.readouterr()


def test_info_table(capsys: pytest.CaptureFixture[str], sample_data: Path) -> None:
    assert cli.main(["info", str(sample_data / "xray")]) == 0
    out = capsys.readouterr().out
    assert "CR" in out and "1024 x 1024" in out and "view: PA" in out


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["info", "--help"]) == 0
    assert "--json" in capsys.readouterr().out
    assert cli.main(["--help"]) == 0
    assert "info" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0


def test_entry_point_in_a_subprocess(sample_data: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.dcm").write_text("nope")
    shutil.copy(sample_data / "xray" / "Fake_MONOHR1.dcm", tmp_path / "xr.dcm")
    proc = subprocess.run(
        [sys.executable, "-m", "medad_viewer.cli", "info", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    assert [s["modality"] for s in doc["series"]] == ["CR"]
    assert len(doc["errors"]) == 1


def test_gui_dispatch(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    calls = []
    fake = types.ModuleType("medad_viewer.gui.app")
    fake.run_app = lambda path=None, demo=False: calls.append((path, demo)) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "medad_viewer.gui.app", fake)
    assert cli.main([str(tmp_path), "--demo"]) == 0
    assert cli.main([]) == 0
    assert calls == [(str(tmp_path), True), (None, False)]
    assert cli.main([str(tmp_path / "missing")]) == 2

    monkeypatch.setitem(sys.modules, "medad_viewer.gui.app", None)  # import fails
    assert cli.main([]) == 1
    assert "viewer could not be started" in capsys.readouterr().err
