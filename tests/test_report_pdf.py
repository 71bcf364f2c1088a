"""PDF report: page count and text of real CT/MR runs, de-identification, cancel leaves nothing, rendered pages."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from medad_viewer.engine.jobs import CancelToken, Cancelled
from medad_viewer.io import load_study
from medad_viewer.report import ReportData, read_score_dir, write_score_dir
from medad_viewer.report.pdf import PdfOptions, page_count, write_pdf_report
from medad_viewer.report.synthetic import synthetic_run
from medad_viewer.report.tables import scores_csv, scores_json
from medad_viewer.review.state import Ellipse, ReviewState, Stroke

CT_HOT = (6, 7, 13)
MR_HOT = (10, 11)
# Synthetic but realistic identifiers written into a copy of the sample CT (its own patient tags are empty).
PATIENT = {"PatientName": "VANDERSLOOT^HENRIETTA", "PatientID": "MRN48213907", "PatientBirthDate": "19580314"}
SECRETS = ["VANDERSLOOT", "HENRIETTA", "MRN48213907", "19580314", "1958-03-14"]


def _pdftext(pdf: Path, *args: str) -> str:
    # Explicit UTF-8 both ways: the result must not depend on the locale the tests run under.
    return subprocess.run(["pdftotext", "-enc", "UTF-8", "-layout", *args, str(pdf), "-"], check=True,
                          capture_output=True, encoding="utf-8").stdout


def _pdfinfo(pdf: Path) -> str:
    """The document information dictionary and the XMP metadata stream."""
    return "".join(subprocess.run(["pdfinfo", "-enc", "UTF-8", *extra, str(pdf)], check=True, capture_output=True,
                                  encoding="utf-8").stdout for extra in ([], ["-meta"]))


def _page_pngs(pdf: Path, out: Path, dpi: int = 30) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(["pdftoppm", "-r", str(dpi), "-png", str(pdf), str(out / "page")], check=True)
    return sorted(out.glob("page-*.png"))


def _set_element(data: bytes, tag: bytes, vr: bytes, value: str) -> bytes:
    """Fill an empty explicit-VR-little-endian element (the sample's patient tags are present but empty)."""
    empty = tag + vr + b"\x00\x00"
    at = data.find(empty)
    assert at > 0, f"element {tag!r} not found empty"
    raw = value.encode("ascii")
    raw += b" " if len(raw) % 2 else b""
    return data[:at] + tag + vr + len(raw).to_bytes(2, "little") + raw + data[at + len(empty):]


def copy_identified_ct(sample_data: Path, folder: Path) -> Path:
    """Copy the sample CT series into `folder` with PATIENT's name, ID and birth date filled in."""
    for f in sorted((sample_data / "ct-dicom").glob("*.dcm")):
        b = f.read_bytes()
        b = _set_element(b, b"\x10\x00\x10\x00", b"PN", PATIENT["PatientName"])
        b = _set_element(b, b"\x10\x00\x20\x00", b"LO", PATIENT["PatientID"])
        b = _set_element(b, b"\x10\x00\x30\x00", b"DA", PATIENT["PatientBirthDate"])
        (folder / f.name).write_bytes(b)
    return folder


@pytest.fixture(scope="module")
def ct(sample_data):
    return load_study(sample_data / "ct-dicom").series[0]


@pytest.fixture(scope="module")
def identified_ct(tmp_path_factory, sample_data):
    """The sample CT with a patient name, ID and birth date, in a folder named after the patient (as happens)."""
    folder = tmp_path_factory.mktemp("studies") / "Vandersloot_Henrietta_CT"
    folder.mkdir()
    series = load_study(copy_identified_ct(sample_data, folder)).series[0]
    for key, value in PATIENT.items():
        assert str(series.identifiers.get(key, "")).strip() == value  # io read them: the test means something
    return series


def _review(uid: str) -> ReviewState:
    rs = ReviewState()
    rs.set_decision(uid, CT_HOT[0], "confirmed")
    rs.set_note(uid, CT_HOT[0], "Round hypodense focus. Discussed with Henrietta Vandersloot's GP.")
    rs.add_annotation(uid, CT_HOT[0], Ellipse(250, 200, 40, 30))
    rs.add_annotation(uid, CT_HOT[0], Stroke(((100, 100), (130, 120), (160, 110)), 6))
    rs.set_decision(uid, 2, "confirmed")  # below the threshold, flagged by the reviewer alone
    rs.set_decision(uid, CT_HOT[1], "dismissed")
    return rs


@pytest.fixture(scope="module")
def ct_run(ct, tmp_path_factory):
    """A real run folder (written and read back) of the sample CT with blobs on three slices."""
    refs = [(ct.source, ct.uid, 2), (ct.source, ct.uid, 17), ("/no/longer/there", "gone", 3)]
    folder = write_score_dir(tmp_path_factory.mktemp("run") / "ct", synthetic_run(ct, CT_HOT, references=refs))
    return read_score_dir(folder)


@pytest.fixture(scope="module")
def ct_pdf(ct, ct_run, tmp_path_factory):
    data = ReportData.build(ct_run, ct, _review(ct.uid))
    path = tmp_path_factory.mktemp("pdf") / "ct-report.pdf"
    fractions: list[float] = []
    write_pdf_report(data, path, progress=lambda f, m: fractions.append(f))
    return path, data, fractions


def test_ct_report_pages_and_text(ct_pdf, tmp_path):
    path, data, fractions = ct_pdf
    flagged = [r.index for r in data.flagged]
    assert flagged == [2, 6, 7, 13]  # three by score (blobs), one confirmed by the reviewer
    expected = 1 + 1 + len(flagged)  # cover, summary (plot + table), one page per flagged slice
    assert page_count(data) == expected
    assert f"Pages:           {expected}" in _pdfinfo(path)
    assert len(_page_pngs(path, tmp_path / "png")) == expected
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    images = subprocess.run(["pdfimages", "-list", str(path)], check=True, capture_output=True,
                            encoding="utf-8").stdout
    rows = [line.split() for line in images.splitlines()[2:]]
    assert rows and all(r[8] != "jpeg" for r in rows)  # slices stored losslessly
    slices = [r for r in rows if (int(r[3]), int(r[4])) == (512, 512)]
    assert len(slices) >= 2 * len(flagged) and all(float(r[12]) >= 150 for r in slices)  # >= 150 dpi at print size

    pages = _pdftext(path).split("\f")[:expected]
    assert len(pages) == expected
    for k, page in enumerate(pages, start=1):
        flat = " ".join(page.split())
        assert "Decision support only: the anomaly maps are not a diagnosis" in flat
        assert f"Page {k} of {expected}" in flat
    cover, summary = " ".join(pages[0].split()), " ".join(pages[1].split())
    for words in ("CT Body 3.0", "20 slices of 512 × 512 pixels", "memory bank", "efficientnet-lite2", "cpu",
                  "Normal slices: 3 normal reference slices", "not available", "medad-viewer 0.1.0"):
        assert words in cover, words
    for r in data.flagged:
        assert f"{r.score:.4f}" in summary
        row = next(line for line in pages[1].splitlines() if f"{r.score:.4f}" in line)
        assert row.split()[0] == str(r.index + 1)  # slice numbers count from 1, as in the viewer
    for r, page in zip(data.flagged, pages[2:]):
        flat = " ".join(page.split())
        assert f"Slice {r.index + 1} of 20" in flat
        assert f"score {r.score:.4f}" in flat
        assert "W 400 / L 40 HU, Soft tissue" in flat
    annotated = " ".join(pages[2 + flagged.index(CT_HOT[0])].split())
    assert "confirmed" in annotated and "2 drawn by the reviewer" in annotated
    assert "Round hypodense focus" in annotated


def test_mr_report(sample_data, tmp_path):
    mr = load_study(sample_data / "mr-brain" / "brain1_image.nrrd").series[0]
    other = load_study(sample_data / "mr-brain" / "brain2_image.nrrd").series[0]
    run = synthetic_run(mr, MR_HOT, references=[(other.source, other.uid, k) for k in (4, 8, 12)], seed=3)
    run = read_score_dir(write_score_dir(tmp_path / "run", run))
    data = ReportData.build(run, mr, None, threshold_pct=99.0)
    assert [r.index for r in data.flagged] == list(MR_HOT)
    path = write_pdf_report(data, tmp_path / "mr.pdf")
    assert len(_page_pngs(path, tmp_path / "png")) == 1 + 1 + len(MR_HOT)
    text = " ".join(_pdftext(path).split())
    assert "Slice 11 of 25" in text and "Slice 12 of 25" in text
    assert "NRRD file" in text and "brain1" not in text  # a file name is not shown in a de-identified report
    assert "Series-" in text  # references from another series get a pseudonymous label
    assert "Threshold 99th percentile of normal (map value" in text

    # "Flag at" apart from the heatmap threshold (as the viewer keeps them): more slices flagged, same heatmap.
    low = ReportData.build(run, mr, None, threshold_pct=99.0, flag_pct=60.0)
    expect = [int(i) for k, i in enumerate(run.indices) if run.percentiles[k] >= 60.0]
    assert [r.index for r in low.flagged] == expect and len(expect) > len(MR_HOT)
    assert low.pixel_threshold == data.pixel_threshold
    text = " ".join(_pdftext(write_pdf_report(low, tmp_path / "mr60.pdf"), "-l", "2").split())
    assert "slices flagged at the 60th percentile of normal; heatmap from the 99th percentile of normal" in text
    assert f"{len(expect)} of 25 scored slices flagged (score at or above the 60th percentile of normal" in text


def test_default_export_is_deidentified(identified_ct, tmp_path):
    s = identified_ct
    run = synthetic_run(s, CT_HOT, references=[(s.source, s.uid, 2)])
    data = ReportData.build(run, s, _review(s.uid))
    pdf = write_pdf_report(data, tmp_path / "report.pdf")
    raw = pdf.read_bytes().lower()
    text = _pdftext(pdf).lower()
    info = _pdfinfo(pdf).lower()
    csv_text = scores_csv(data).lower()
    import json

    json_text = json.dumps(scores_json(data)).lower()
    for secret in SECRETS + ["vandersloot_henrietta"]:
        s_low = secret.lower()
        assert s_low.encode() not in raw, secret
        assert s_low not in text, secret
        assert s_low not in info, secret
        assert s_low not in csv_text, secret
        assert s_low not in json_text, secret
    assert data.privacy.label.lower() in text and data.privacy.label.lower() in info
    assert "[removed]" in text  # the note's patient name was cleaned, the rest of the note kept
    assert "round hypodense focus" in text


def test_identifiers_when_asked(identified_ct, tmp_path):
    s = identified_ct
    data = ReportData.build(synthetic_run(s, CT_HOT), s, None, include_identifiers=True)
    pdf = write_pdf_report(data, tmp_path / "named.pdf")
    text = " ".join(_pdftext(pdf).split())
    assert "VANDERSLOOT, HENRIETTA" in text
    assert "MRN48213907" in text
    assert "1958-03-14" in text
    # Metadata travels with the file: it keeps the pseudonymous label even then.
    assert "vandersloot" not in _pdfinfo(pdf).lower()


def test_cancel_leaves_no_file(ct, ct_run, tmp_path):
    data = ReportData.build(ct_run, ct, None)
    token = CancelToken()

    def progress(fraction: float, message: str) -> None:
        if message.startswith("Report: slice"):
            token.cancel()

    with pytest.raises(Cancelled):
        write_pdf_report(data, tmp_path / "report.pdf", progress=progress, cancel=token)
    assert list(tmp_path.iterdir()) == []


def test_many_flagged_slices_paginate(ct, tmp_path):
    """A long table continues on further pages; pages go to the highest-scoring slices when capped."""
    run = synthetic_run(ct, tuple(range(20)))
    data = ReportData.build(run, ct, None)
    assert len(data.flagged) == 20
    opts = PdfOptions(max_slice_pages=2)
    pdf = write_pdf_report(data, tmp_path / "capped.pdf", opts)
    expected = page_count(data, opts)
    assert len(_page_pngs(pdf, tmp_path / "png")) == expected == 1 + 1 + 2
    text = " ".join(_pdftext(pdf).split())
    assert "Pages are given to the 2 highest-scoring flagged slices" in text
    top = sorted(data.flagged, key=lambda r: -r.score)[:2]
    for r in top:
        assert f"Slice {r.number} of 20" in text


def test_reports_use_the_fonts_shipped_with_the_app(ct_pdf):
    """resources/fonts (DejaVu Sans) is registered with Qt, so a report looks the same on a machine (or in the app
    bundle) without those fonts installed."""
    from medad_viewer.paths import FONTS
    from medad_viewer.report.painting import register_fonts
    from PySide6.QtGui import QFontDatabase

    assert len(list(FONTS.glob("DejaVuSans*.ttf"))) == 4 and (FONTS / "LICENSE-DejaVu.txt").is_file()
    register_fonts()
    shipped = {f for p in FONTS.glob("*.ttf") for f in QFontDatabase.applicationFontFamilies(
        QFontDatabase.addApplicationFont(str(p)))}
    assert shipped == {"DejaVu Sans"}
    fonts = subprocess.run(["pdffonts", str(ct_pdf[0])], check=True, capture_output=True, text=True).stdout
    assert "DejaVuSans" in fonts
