"""Where the app's own read-only files are: `resources/` beside the package in a checkout, inside the bundle when
frozen (PyInstaller places it at the same relative spot). Nothing is ever written there."""

from __future__ import annotations

from pathlib import Path

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
DEMO_STUDY = RESOURCES / "demo" / "brain1_image.nrrd"
DEMO_REFERENCES = RESOURCES / "demo" / "reference_set.json"
FONTS = RESOURCES / "fonts"
