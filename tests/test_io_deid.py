"""De-identification: pseudonyms, stripping identifying keys, and loaders keeping them apart."""

from __future__ import annotations

import re
from pathlib import Path

from medad_viewer.io import IDENTIFYING_KEYS, deidentify, load_study, pseudonym


def test_pseudonym_is_stable_short_and_salted() -> None:
    a = pseudonym("1.2.840.113619.2.55.3")
    assert re.fullmatch(r"Study-[0-9A-F]{6}", a)
    assert pseudonym("1.2.840.113619.2.55.3") == a
    assert pseudonym("1.2.840.113619.2.55.4") != a
    assert pseudonym("1.2.840.113619.2.55.3", salt="site-b") != a
    assert pseudonym("1.2.3", prefix="Series").startswith("Series-")
    assert "113619" not in a


def test_deidentify_strips_identifying_keys() -> None:
    metadata = {
        "PatientName": "Doe^Jane",
        "PatientID": "12345",
        "StudyDate": "20240101",
        "AccessionNumber": "A1",
        "InstitutionName": "General",
        "SeriesInstanceUID": "1.2.3",
        "0010|21c0": "4",
        "Manufacturer": "SIEMENS",
        "EchoTime": "12",
        "KVP": "120",
        "nested": {"ReferringPhysicianName": "Dr X", "BodyPartExamined": "CHEST"},
        "items": [{"PatientBirthDate": "19500101", "Modality": "CT"}],
    }
    clean = deidentify(metadata)
    assert clean == {
        "Manufacturer": "SIEMENS",
        "EchoTime": "12",
        "KVP": "120",
        "nested": {"BodyPartExamined": "CHEST"},
        "items": [{"Modality": "CT"}],
    }
    assert metadata["PatientName"] == "Doe^Jane"  # the input is not modified
    assert {"PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
            "StudyDate", "ReferringPhysicianName"} <= IDENTIFYING_KEYS


def test_loaded_series_keep_identifiers_out_of_metadata(sample_data: Path) -> None:
    study = load_study(sample_data / "xray")
    assert study.series
    for s in study.series:
        assert deidentify(s.metadata) == s.metadata
        assert deidentify(s.identifiers) == {}
    cr = next(s for s in study.series if s.modality == "CR")
    assert cr.identifiers["PatientName"] and cr.identifiers["StudyInstanceUID"]
