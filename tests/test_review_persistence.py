"""Reference sets, sessions, saved scores and the adaptation cache on disk: round-trips and atomic writes."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

import medad_viewer.review.session as session_mod
from medad_viewer.review.references import ReferenceSet, ReferenceSlice, list_named, load_named, save_named
from medad_viewer.review.results import ScoreResults
from medad_viewer.io import load_study
from medad_viewer.review.session import SaveFailed, Session, SessionStore, study_key
from medad_viewer.review.state import Decision, Ellipse, ReviewState
from medad_viewer.io.atomic import atomic_write, atomic_write_json, leftover_temporaries
from medad_viewer.review.storage import data_dir, short_hash

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


def _demo_copy(folder: Path, name: str = "brain.nrrd") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / name
    shutil.copyfile(REPO / "resources" / "demo" / "brain1_image.nrrd", dst)
    return dst


def _edited_session(study_path: Path, uid: str) -> Session:
    review = ReviewState()
    review.set_decision(uid, 2, Decision.CONFIRMED)
    review.add_annotation(uid, 2, Ellipse(3, 4, 5, 6))
    review.set_note(uid, 7, "enhancing rim?")
    mask = np.zeros((256, 256), bool)
    mask[10:20, 30:40] = True
    ref = ReferenceSet("r", "MR", [ReferenceSlice(str(study_path), uid, 0),
                                   ReferenceSlice(str(study_path), uid, 2, "abnormal", mask)])
    return Session(str(study_path), uid, 3, ref, review, {"method": "memory"}, {"threshold": 97.5,
                                                                               "windows": {uid: [40, 80, "x"]}})


def test_session_lives_in_app_data_keyed_by_the_study(tmp_path, app_data):
    path = _demo_copy(tmp_path / "study")
    study = load_study(path)
    uid = study.series[0].uid
    store = SessionStore.for_study(study, path)
    saved = store.save(_edited_session(path, uid))
    store.save_scores(_scores(uid))
    # Nothing is written beside the study: it may be a CD, a PACS export or somebody else's folder.
    assert sorted(p.name for p in path.parent.iterdir()) == ["brain.nrrd"]
    assert saved.is_relative_to(app_data / "sessions") and not _tmp_leftovers(app_data)
    back = SessionStore.for_study(load_study(path), path).load()
    assert back.series_uid == uid and back.slice_index == 3 and back.view["threshold"] == 97.5
    assert back.review.get(uid, 2).annotations == (Ellipse(3, 4, 5, 6),)
    assert back.review.get(uid, 7).note == "enhancing rim?"
    assert back.reference_set.references[1].mask.sum() == 100
    assert len(store.load_scores(uid)) == 4 and store.load_scores("other") is None
    # Another study gets another session.
    other = load_study(REPO / "resources" / "demo" / "brain1_label.nrrd")
    assert SessionStore.for_study(other).load() is None


def test_moved_or_copied_study_finds_its_session(tmp_path, sample_data):
    path = _demo_copy(tmp_path / "a")
    study = load_study(path)
    uid = study.series[0].uid
    SessionStore.for_study(study, path).save(_edited_session(path, uid))
    moved = tmp_path / "elsewhere" / "renamed.nrrd"
    moved.parent.mkdir()
    path.rename(moved)
    again = load_study(moved)
    assert again.series[0].uid == uid  # the uid comes from the pixels, not the path
    back = SessionStore.for_study(again, moved).load(again)
    assert back is not None and back.review.get(uid, 2).decision == Decision.CONFIRMED
    assert {r.source for r in back.reference_set} == {str(moved.resolve())}  # references follow the study
    # A DICOM series is known by its UIDs (the sample CT has none: it is known by its pixels).
    ct = tmp_path / "ct"
    shutil.copytree(sample_data / "ct-dicom", ct)
    s1 = load_study(ct)
    SessionStore.for_study(s1, ct).save(Session(str(ct), s1.series[0].uid, 11))
    ct2 = tmp_path / "ct-copy"
    shutil.copytree(ct, ct2)
    assert SessionStore.for_study(load_study(ct2), ct2).load().slice_index == 11


def test_study_key_uses_study_instance_uid():
    class S:
        def __init__(self, uid, study=None):
            self.uid, self.identifiers = uid, ({"StudyInstanceUID": study} if study else {})

    assert study_key([S("1.2.3", "9.9"), S("1.2.4", "9.9")]) == study_key([S("1.2.3", "9.9")])  # a series added
    assert study_key([S("1.2.3", "9.9")]) != study_key([S("1.2.3", "9.8")])
    assert study_key([S("file:ab")]) != study_key([S("file:cd")])


def test_identical_files_in_one_folder_get_their_own_uids(tmp_path):
    a, b = _demo_copy(tmp_path, "a.nrrd"), _demo_copy(tmp_path, "b.nrrd")
    study = load_study(tmp_path)
    uids = [s.uid for s in study.series]
    assert len(set(uids)) == 2 and uids[1] == uids[0] + "#copy2"
    assert load_study(a).series[0].uid == uids[0]
    # The old path-derived uid stays known, for sessions and reference sets saved by earlier versions.
    assert load_study(b).series[0].aliases[0].startswith("file:") and len(study.series[1].aliases) == 1


def test_damaged_session_is_skipped(tmp_path):
    path = _demo_copy(tmp_path / "s")
    study = load_study(path)
    store = SessionStore.for_study(study, path)
    store.session_file.parent.mkdir(parents=True, exist_ok=True)
    store.session_file.write_text("{truncated")
    assert SessionStore.for_study(study, path).load() is None


def test_full_or_read_only_app_data_uses_a_spare_folder_then_says_so(tmp_path, monkeypatch):
    path = _demo_copy(tmp_path / "s")
    study = load_study(path)
    uid = study.series[0].uid
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # a folder cannot be made under a file, even by root
    monkeypatch.setattr(session_mod, "sessions_root", lambda: blocked / "sessions")
    store = SessionStore.for_study(study, path)
    where = store.save(_edited_session(path, uid))
    store.save_scores(_scores(uid))
    assert where.is_relative_to(session_mod.spare_root())
    assert "could not be saved in" in store.notice and str(where.parent) in store.notice
    back = SessionStore.for_study(study, path)
    assert back.load().review.get(uid, 2).decision == Decision.CONFIRMED and len(back.load_scores(uid)) == 4
    monkeypatch.setattr(session_mod, "spare_root", lambda: blocked / "spare")
    with pytest.raises(SaveFailed) as err:
        SessionStore.for_study(study, path).save(_edited_session(path, uid))
    assert "kept in memory" in str(err.value) and "Ctrl+S" in str(err.value) and str(blocked) in str(err.value)


def _legacy_session(study_path: Path, old_uid: str, folder: Path, prefix: str) -> None:
    """What version 1 wrote beside the study: format /1, series known by a hash of their path."""
    folder.mkdir(parents=True, exist_ok=True)
    mask_dir = folder / f"{prefix}masks"
    s = _edited_session(study_path, old_uid)
    s.reference_set.write_masks(mask_dir)
    d = {"format": "medad-viewer-session/1", "study_path": str(study_path), "series_uid": old_uid,
         "slice_index": 3, "reference_set": s.reference_set.to_dict(None, mask_dir), "reference_set_path": None,
         "review": s.review.to_dict(), "settings": {}, "view": s.view,
         "scores_summary": {old_uid: {"scored": 4}}, "saved_at": 1.0}
    (folder / f"{prefix}session.json").write_text(json.dumps(d))
    _scores(old_uid).save(folder / f"{prefix}scores-{short_hash(old_uid)}.npz")


def test_sessions_beside_studies_are_migrated_on_first_open(tmp_path, app_data):
    path = _demo_copy(tmp_path / "study")
    study = load_study(path)
    s = study.series[0]
    old_uid = s.aliases[0]
    legacy = path.parent / ".medad-viewer"
    _legacy_session(path, old_uid, legacy, "brain.nrrd.")
    (legacy / "other.nrrd.session.json").write_text("{}")  # another study's session in the same folder stays
    store = SessionStore.for_study(study, path)
    assert store.migrate_legacy(study)
    back = store.load(study)
    assert back.series_uid == s.uid and back.review.get(s.uid, 2).decision == Decision.CONFIRMED
    assert back.review.get(s.uid, 7).note == "enhancing rim?" and back.view["windows"] == {s.uid: [40, 80, "x"]}
    assert [r.series_uid for r in back.reference_set] == [s.uid, s.uid]
    assert back.reference_set.references[1].mask.sum() == 100 and set(back.scores_summary) == {s.uid}
    assert len(store.load_scores(s.uid)) == 4
    assert sorted(p.name for p in legacy.iterdir()) == ["other.nrrd.session.json"]
    assert not store.migrate_legacy(study)  # once only
    # The app-data sessions of version 1 (studies in read-only folders) move too.
    ro = tmp_path / "ro" / "x.nrrd"  # another study (the same pixels would be the same study, already migrated)
    ro.parent.mkdir()
    shutil.copyfile(REPO / "resources" / "demo" / "brain1_label.nrrd", ro)
    ro_study = load_study(ro)
    _legacy_session(ro, ro_study.series[0].aliases[0], app_data / "sessions" / short_hash(str(ro.resolve())),
                    "x.nrrd.")
    ro_store = SessionStore.for_study(ro_study, ro)
    assert ro_store.migrate_legacy(ro_study) and ro_store.load(ro_study).slice_index == 3
    assert not (app_data / "sessions" / short_hash(str(ro.resolve()))).exists()


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


def test_new_files_are_not_owner_only(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    p = atomic_write_json(tmp_path / "x.json", {})
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask  # as the umask allows, not mkstemp's 0600


def test_maps_are_kept_compact_and_given_back_at_full_size(tmp_path):
    """A 1,000-slice 512 x 512 series must not hold 1 GB of float32 maps: each is kept at most 256 px a side in
    float16 and read back at the slice's size, close to what the detector gave (its maps are smooth)."""
    import cv2

    rng = np.random.default_rng(0)
    amap = cv2.GaussianBlur(rng.random((512, 384)).astype(np.float32) * 40, (0, 0), 8)
    res = ScoreResults("u", 3)
    r = res.add(1, 2.0, 97.0, amap)
    assert r.compact.dtype == np.float16 and max(r.compact.shape) == 256 and r.compact.nbytes == 256 * 192 * 2
    back = r.map
    assert back.shape == (512, 384) and back.dtype == np.float32
    assert np.abs(back - amap).max() < 0.02 * float(amap.max() - amap.min())
    res.save(tmp_path / "s.npz")
    again = ScoreResults.load(tmp_path / "s.npz").get(1)
    assert again.shape == (512, 384) and np.array_equal(again.compact, r.compact)
    # Files saved by the previous version hold full-size float16 maps and no map_shape: they load as they were.
    old = tmp_path / "old.npz"
    meta = {"series_uid": "u", "num_slices": 3, "detector": {}, "complete": False, "seconds": 0.0}
    np.savez_compressed(old, indices=np.array([1], np.int32), scores=np.array([2.0]), percentiles=np.array([97.0]),
                        maps=amap[None].astype(np.float16), meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    legacy = ScoreResults.load(old).get(1)
    assert legacy.map.shape == (512, 384) and np.abs(legacy.map - amap).max() < 0.02 * float(amap.max())


def test_a_temporary_left_by_a_killed_save_is_removed_later(tmp_path):
    path = _demo_copy(tmp_path / "s")
    study = load_study(path)
    store = SessionStore.for_study(study, path)
    store.save(Session(str(path), study.series[0].uid, 5))
    left = store.folder / ".session.abcd1234.part.json"
    left.write_text('{"format": "medad-viewer-se')  # what a SIGKILL during the write leaves
    fresh = store.folder / ".session.efgh5678.part.json"
    fresh.write_text("{")  # another window writing right now: not touched
    os.utime(left, (time.time() - 3600, time.time() - 3600))
    assert SessionStore.for_study(study, path).load().slice_index == 5
    assert not left.exists() and fresh.exists()
