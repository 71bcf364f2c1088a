"""Reference sets, sessions, saved scores and the adaptation cache on disk: round-trips and atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import medad_viewer.review.session as session_mod
from medad_viewer.review.references import ReferenceSet, ReferenceSlice, list_named, load_named, save_named
from medad_viewer.review.results import ScoreResults
from medad_viewer.review.session import Session, SessionStore
from medad_viewer.review.state import Decision, Ellipse, ReviewState
from medad_viewer.io.atomic import atomic_write, atomic_write_json, leftover_temporaries
from medad_viewer.review.storage import data_dir

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def app_data(tmp_path, monkeypatch):
    d = tmp_path / "appdata"
    monkeypatch.setenv("MEDAD_VIEWER_DATA_DIR", str(d))
    return d


_tmp_leftovers = leftover_temporaries


def test_data_dir_override(app_data):
    assert data_dir() == app_data


def test_reference_set_round_trip_relative(tmp_path):
    study = tmp_path / "studies" / "brain.nrrd"
    study.parent.mkdir()
    study.write_bytes(b"x")
    mask = np.zeros((8, 8), bool)
    mask[2:4, 3:6] = True
    rs = ReferenceSet("Brain MR", "MR", [ReferenceSlice(str(study), "uid-1", 4),
                                         ReferenceSlice(str(study), "uid-1", 12, "abnormal", mask, "T1 axial")])
    h = rs.content_hash()
    path = rs.save(tmp_path / "studies" / "set.json")
    d = json.loads(path.read_text())
    assert d["references"][0]["source"] == "brain.nrrd"  # relative to the set file
    assert (tmp_path / "studies" / "set.masks").is_dir()
    assert not _tmp_leftovers(tmp_path)
    # Moving the folder keeps the set usable.
    moved = tmp_path / "moved"
    (tmp_path / "studies").rename(moved)
    back = ReferenceSet.load(moved / "set.json")
    assert back.references[0].source == str((moved / "brain.nrrd").resolve())
    assert back.content_hash() == h
    assert np.array_equal(back.references[1].mask, mask)
    assert back.references[1].description == "T1 axial"
    assert [r.index for r in back.normals()] == [4]


def test_content_hash_changes_with_content():
    a = ReferenceSet("a", "MR", [ReferenceSlice("/x", "u", 1), ReferenceSlice("/x", "u", 2)])
    b = ReferenceSet("b", "MR", [ReferenceSlice("/elsewhere", "u", 1), ReferenceSlice("/x", "u", 2)])
    assert a.content_hash() == b.content_hash()  # name and location don't count
    c = a.copy()
    c.add(ReferenceSlice("/x", "u", 2, "abnormal"))
    assert len(c) == 2 and c.content_hash() != a.content_hash()
    c.remove(1)
    assert c.content_hash() != a.content_hash()


def test_bad_reference_set_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        ReferenceSet.load(p)
    p.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError):
        ReferenceSet.load(p)


def test_named_sets(app_data):
    rs = ReferenceSet("Head CT / soft", "CT", [ReferenceSlice("/data/ct", "1.2.3", 5)])
    path = save_named(rs)
    assert path.parent == app_data / "reference-sets"
    assert [n for n, _ in list_named()] == ["Head CT / soft"]
    back = load_named("Head CT / soft")
    assert back.references[0].source == str(Path("/data/ct"))
    with pytest.raises(KeyError):
        load_named("nope")


def test_demo_reference_set_resolves():
    rs = ReferenceSet.load(REPO / "resources" / "demo" / "reference_set.json")
    assert len(rs.normals()) >= 3
    for r in rs:
        assert Path(r.source).is_file()
        assert r.index not in range(11, 18)  # the tumour slices


def test_atomic_write_cleans_up_on_failure(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1}  # the old content survives a failed write

    def dies_half_way(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write('{"a": ')
        assert leftover_temporaries(tmp_path)  # the temporary exists while it is written
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, dies_half_way)
    assert json.loads(target.read_text()) == {"a": 1}
    assert not _tmp_leftovers(tmp_path)


def _scores(uid="u1", n=4):
    res = ScoreResults(uid, n, {"backbone": "efficientnet-lite2"}, np.linspace(0, 3, 1001))
    rng = np.random.default_rng(0)
    for i in range(n):
        res.add(i, float(i % 3), 50.0 + i, rng.random((6, 5)).astype(np.float32))
    res.complete = True
    return res


def test_score_results_round_trip(tmp_path):
    res = _scores()
    assert [r.index for r in res.ranked()] == [2, 1, 0, 3]
    assert res.value_at(50.0) == pytest.approx(1.5)
    assert res.pixel_percentile(1.5) == pytest.approx(50.0)
    p = res.save(tmp_path / "s.npz")
    back = ScoreResults.load(p)
    assert back.complete and back.detector == res.detector and len(back) == 4
    assert np.allclose(back.get(2).map, res.get(2).map, atol=1e-3)
    assert back.percentiles() == res.percentiles()
    (tmp_path / "broken.npz").write_bytes(b"nope")
    with pytest.raises(ValueError):
        ScoreResults.load(tmp_path / "broken.npz")


def test_session_in_study_folder(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    store = SessionStore(study)
    review = ReviewState()
    review.set_decision("u1", 2, Decision.CONFIRMED)
    review.add_annotation("u1", 2, Ellipse(3, 4, 5, 6))
    mask = np.ones((4, 4), bool)
    ref = ReferenceSet("r", "CT", [ReferenceSlice(str(study), "u1", 0), ReferenceSlice(str(study), "u1", 2,
                                                                                        "abnormal", mask)])
    s = Session(str(study), "u1", 3, ref, review, {"method": "memory"}, {"threshold": 97.5})
    path = store.save(s)
    assert path == study / ".medad-viewer" / "session.json"
    store.save_scores(_scores("u1"))
    assert not _tmp_leftovers(study)
    again = SessionStore(study)
    back = again.load()
    assert back.series_uid == "u1" and back.slice_index == 3 and back.view["threshold"] == 97.5
    assert back.review.get("u1", 2).annotations == (Ellipse(3, 4, 5, 6),)
    assert back.reference_set.content_hash() == ref.content_hash()
    assert len(again.load_scores("u1")) == 4
    assert again.load_scores("other") is None


def test_session_file_study_and_read_only_fallback(tmp_path, app_data, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    f1, f2 = folder / "a.nrrd", folder / "b.nrrd"
    f1.write_bytes(b"1")
    f2.write_bytes(b"2")
    # Permission bits don't bind root (CI containers), so the read-only check itself is stubbed.
    monkeypatch.setattr(session_mod, "is_writable_dir", lambda p: not str(p).startswith(str(folder)))
    s1, s2 = SessionStore(f1), SessionStore(f2)
    s1.save(Session(str(f1), "x", 1))
    s2.save(Session(str(f2), "y", 2))
    assert str(s1.session_file).startswith(str(app_data))
    assert s1.session_file != s2.session_file
    assert not (folder / ".medad-viewer").exists()
    assert SessionStore(f1).load().series_uid == "x"
    assert SessionStore(f2).load().series_uid == "y"


def test_file_studies_share_a_folder(tmp_path):
    f1, f2 = tmp_path / "a.nrrd", tmp_path / "b.nrrd"
    SessionStore(f1).save(Session(str(f1), "x", 1))
    SessionStore(f2).save(Session(str(f2), "y", 2))
    assert sorted(p.name for p in (tmp_path / ".medad-viewer").iterdir()) == ["a.nrrd.session.json",
                                                                              "b.nrrd.session.json"]
    assert SessionStore(f1).load().series_uid == "x"


def test_damaged_session_is_skipped(tmp_path):
    study = tmp_path / "s"
    study.mkdir()
    store = SessionStore(study)
    store.session_file.parent.mkdir(parents=True, exist_ok=True)
    store.session_file.write_text("{truncated")
    assert SessionStore(study).load() is None


def test_adaptation_cache_key_and_prune(tmp_path):
    from medad_viewer.review.adaptation_cache import AdaptationCache, cache_key

    k1 = cache_key("abc", "w1", {"method": "adapted"})
    assert k1 == cache_key("abc", "w1", {"method": "adapted"})
    assert k1 != cache_key("abc", "w2", {"method": "adapted"})
    assert k1 != cache_key("abc", "w1", {"method": "memory"})
    assert k1 != cache_key("abc", "w1", {"method": "adapted"}, ["p1"])
    cache = AdaptationCache(tmp_path / "c", max_entries=2)
    assert cache.load(k1) is None

    class Fake:
        def __init__(self, n):
            self.n = n

        def save(self, base):
            base.parent.mkdir(parents=True, exist_ok=True)
            base.with_suffix(".json").write_text("{}")
            base.with_suffix(".safetensors").write_bytes(b"")
            os.utime(base.with_suffix(".json"), (self.n, self.n))
            return base.with_suffix(".json")

    for n in range(4):
        cache.store(f"k{n}", Fake(1000 + n))
    assert sorted(p.stem for p in (tmp_path / "c").glob("*.json")) == ["k2", "k3"]
    assert cache.has("k3") and not cache.has("k0")
    assert cache.load("k3") is None  # not a real detector: treated as a miss, never an error


def test_read_only_folder_is_respected_even_by_root(tmp_path):
    from medad_viewer.review.storage import is_writable_dir

    ro = tmp_path / "ro"
    ro.mkdir()
    assert is_writable_dir(ro / ".medad-viewer")
    os.rmdir(ro / ".medad-viewer")
    os.chmod(ro, 0o555)
    try:
        assert not is_writable_dir(ro / ".medad-viewer")
        assert not (ro / ".medad-viewer").exists()
    finally:
        os.chmod(ro, 0o755)


def test_new_files_are_not_owner_only(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    p = atomic_write_json(tmp_path / "x.json", {})
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask  # as the umask allows, not mkstemp's 0600


def test_session_kept_out_of_the_study_folder_on_request(tmp_path, app_data):
    study = tmp_path / "demo.nrrd"
    study.write_bytes(b"x")
    store = SessionStore(study, local=False)
    store.save(Session(str(study), "u", 4))
    assert not (tmp_path / ".medad-viewer").exists()
    assert str(store.session_file).startswith(str(app_data))
    assert SessionStore(study, local=False).load().slice_index == 4
