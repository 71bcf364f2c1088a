"""Shared fixtures: the sample data beside the checkout, and an offscreen Qt platform."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# Widgets loaded before any test: report.painting.ensure_qt_app then makes a QApplication, never a bare
# QGuiApplication that would leave the widget tests (pytest-qt) of the same process without one.
import PySide6.QtWidgets  # noqa: E402,F401

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DATA = Path(os.environ.get("MEDAD_SAMPLE_DATA", REPO.parent / "shared" / "sample-data"))


@pytest.fixture(scope="session")
def sample_data() -> Path:
    if not SAMPLE_DATA.is_dir():
        pytest.fail(f"sample data not found at {SAMPLE_DATA} (set MEDAD_SAMPLE_DATA)")
    return SAMPLE_DATA


@pytest.fixture(autouse=True)
def _keep_the_locale():
    """Some native code (a SimpleITK/GDCM DICOM write in the io tests) leaves LC_CTYPE at "C" behind it; later
    tests that read a subprocess's UTF-8 text would then fail for a reason of their order. Put it back."""
    import locale

    saved = locale.setlocale(locale.LC_CTYPE)
    yield
    if locale.setlocale(locale.LC_CTYPE) != saved:
        locale.setlocale(locale.LC_CTYPE, saved)
