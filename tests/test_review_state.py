"""Review state: decisions, notes and annotations with undo/redo; flagged-slice navigation; round-trips."""

from __future__ import annotations

from medad_viewer.review.state import (Decision, Ellipse, ReviewState, SliceReview, Stroke, flagged,
                                       next_flagged)


def test_decisions_undo_redo():
    st = ReviewState()
    seen = []
    st.subscribe(seen.append)
    assert st.set_decision("s", 3, Decision.CONFIRMED)
    assert st.set_decision("s", 5, "dismissed")
    assert not st.set_decision("s", 5, Decision.DISMISSED)  # no change, no undo step
    assert st.get("s", 3).decision == Decision.CONFIRMED
    assert st.undo() == ("s", 5)
    assert st.get("s", 5).decision == Decision.UNREVIEWED
    assert st.undo() == ("s", 3)
    assert st.get("s", 3).decision == Decision.UNREVIEWED and not st.can_undo
    assert st.undo() is None
    assert st.redo() == ("s", 3)
    assert st.get("s", 3).decision == Decision.CONFIRMED
    assert st.can_redo
    st.set_decision("s", 7, Decision.CONFIRMED)  # a new action drops the redo branch
    assert not st.can_redo
    assert seen == [("s", 3), ("s", 5), ("s", 5), ("s", 3), ("s", 3), ("s", 7)]
    assert st.counts("s")[Decision.CONFIRMED] == 2


def test_annotations_and_notes():
    st = ReviewState()
    e = Ellipse(10, 12, 4, 3)
    k = Stroke(((1.0, 2.0), (3.0, 4.0)), 5.0)
    st.add_annotation("s", 1, e)
    st.add_annotation("s", 1, k)
    assert st.get("s", 1).annotations == (e, k)
    st.remove_annotation("s", 1, 0)
    assert st.get("s", 1).annotations == (k,)
    assert not st.remove_annotation("s", 1, 9)
    st.undo()
    assert st.get("s", 1).annotations == (e, k)
    # A burst of typing is one undo step.
    st.set_note("s", 1, "s")
    st.set_note("s", 1, "sm")
    st.set_note("s", 1, "small lesion")
    assert st.undo_label() == "Edit note"
    st.undo()
    assert st.get("s", 1).note == ""
    assert st.get("s", 1).annotations == (e, k)


def test_note_merge_respects_time(monkeypatch):
    st = ReviewState()
    st.NOTE_MERGE_S = 0.0
    st.set_note("s", 0, "a")
    st.set_note("s", 0, "ab")
    st.undo()
    assert st.get("s", 0).note == "a"


def test_round_trip_drops_empty():
    st = ReviewState()
    st.set_decision("a", 2, Decision.DISMISSED)
    st.set_note("b", 0, "check")
    st.add_annotation("b", 0, Ellipse(1, 2, 3, 4))
    st.set_decision("a", 9, Decision.CONFIRMED)
    st.set_decision("a", 9, Decision.UNREVIEWED)  # back to empty: not stored
    d = st.to_dict()
    assert len(d["reviews"]) == 2
    back = ReviewState.from_dict(d)
    assert back.get("a", 2) == SliceReview(Decision.DISMISSED)
    assert back.get("b", 0).annotations == (Ellipse(1, 2, 3, 4),)
    assert not back.can_undo


def test_flagged_navigation():
    pct = {0: 10.0, 3: 99.5, 5: 97.0, 8: 100.0, 9: float("nan")}
    assert flagged(pct, 95) == [3, 5, 8]
    assert next_flagged(pct, 95, 3) == 5
    assert next_flagged(pct, 95, 8) == 3  # wraps
    assert next_flagged(pct, 95, 8, wrap=False) is None
    assert next_flagged(pct, 95, 3, step=-1) == 8
    assert next_flagged(pct, 95, 4, step=-1) == 3
    assert next_flagged(pct, 100.5, 0) is None
