"""Shared fixtures: the sample data (tests/data, in the repository), the development data beside the checkout (only
for the few tests that need it: skipped without it), and an offscreen Qt platform."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# Widgets loaded before any test: report.painting.ensure_qt_app then makes a QApplication, never a bare
# QGuiApplication that would leave the widget tests (pytest-qt) of the same process without one.
import PySide6.QtWidgets  # noqa: E402,F401

REPO = Path(__file__).resolve().parent.parent
# Permissively licensed sample images, copied unchanged into the repository (tests/data/README.md).
SAMPLE_DATA = Path(os.environ.get("MEDAD_SAMPLE_DATA") or REPO / "tests" / "data")
# Development sets whose terms allow development and evaluation only (BRATS 2013, LGG FLAIR, NIH chest X-rays):
# never in the repository; beside the checkout, or wherever MEDAD_DEV_DATA points.
DEV_DATA = Path(os.environ.get("MEDAD_DEV_DATA") or REPO.parent / "shared" / "sample-data")


@pytest.fixture(scope="session")
def sample_data() -> Path:
    if not SAMPLE_DATA.is_dir():
        pytest.fail(f"sample data not found at {SAMPLE_DATA} (it is in the repository: tests/data; "
                    "MEDAD_SAMPLE_DATA, when set, must point to a folder of the same layout)")
    return SAMPLE_DATA


@pytest.fixture(scope="session")
def dev_data():
    """A folder of `DEV_DATA` (development data, not in the repository): `dev_data("brats2013")`; the test is skipped,
    naming the folder and how to get it, when it is not there."""

    def folder(name: str) -> Path:
        path = DEV_DATA / name
        if not path.is_dir():
            pytest.skip(f"needs {path} (development data, not in the repository): put the shared sample-data "
                        f"folder beside the checkout (../shared/sample-data/{name}) or set MEDAD_DEV_DATA to a "
                        f"folder holding {name}/")
        return path

    return folder


@pytest.fixture(autouse=True)
def _keep_the_locale():
    """Some native code (a SimpleITK/GDCM DICOM write in the io tests) leaves LC_CTYPE at "C" behind it; later
    tests that read a subprocess's UTF-8 text would then fail for a reason of their order. Put it back."""
    import locale

    saved = locale.setlocale(locale.LC_CTYPE)
    yield
    if locale.setlocale(locale.LC_CTYPE) != saved:
        locale.setlocale(locale.LC_CTYPE, saved)
