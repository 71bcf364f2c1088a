"""Loading studies: DICOM series, medical volumes and plain images; windowing; metadata; the overlay colour tables
(colormaps.py) and thumbnail fitting (imaging.py) the viewer and the report share. No Qt."""

from ._util import MAX_2D_SIDE, MAX_BYTES, ReadFailure
from .deid import IDENTIFYING_KEYS, deidentify, pseudonym
from .series import LoadError, Series, Study, series_sequence
from .study import SUPPORTED_FORMATS, load_study
from .volumes import load_volume_aligned
from .windowing import (
    CT_PRESETS,
    WindowPreset,
    apply_window,
    auto_window,
    default_window,
    presets_for,
    to_uint8,
)

__all__ = [
    "CT_PRESETS",
    "IDENTIFYING_KEYS",
    "MAX_2D_SIDE",
    "MAX_BYTES",
    "LoadError",
    "ReadFailure",
    "SUPPORTED_FORMATS",
    "Series",
    "Study",
    "WindowPreset",
    "apply_window",
    "auto_window",
    "default_window",
    "deidentify",
    "load_study",
    "load_volume_aligned",
    "presets_for",
    "pseudonym",
    "series_sequence",
    "to_uint8",
]
