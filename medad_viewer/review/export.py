"""What an export (PDF report, score tables, map volumes) gets from the viewer: one plain snapshot, no Qt.

The viewer's File → Export actions call `medad_viewer.report.<function>(context: ExportContext, path: str)` for the
functions named in EXPORTS; a function the report package does not provide leaves its action disabled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .references import ReferenceSet
from .results import ScoreResults
from .state import ReviewState

# (menu text, function name in medad_viewer.report, file dialog filter)
EXPORTS = [
    ("PDF heatmap report…", "export_pdf_report", "PDF (*.pdf)"),
    ("Score table (CSV)…", "export_scores_csv", "CSV (*.csv)"),
    ("Score table (JSON)…", "export_scores_json", "JSON (*.json)"),
    ("Anomaly maps as a volume…", "export_map_volume", "NRRD (*.nrrd);;NIfTI (*.nii.gz)"),
]


@dataclass
class ExportContext:
    study_path: str
    series: Any  # medad_viewer.io.Series
    results: ScoreResults | None
    review: ReviewState
    reference_set: ReferenceSet
    threshold_pct: float
    detector: dict = field(default_factory=dict)  # AnomalyDetector.describe() of the run that made `results`
    current_index: int = 0
