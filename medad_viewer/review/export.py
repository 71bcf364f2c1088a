"""What an export (PDF report, score tables, map volumes) gets from the viewer: one plain snapshot, no Qt.

The viewer's File → Export actions call `medad_viewer.report.<function>(context: ExportContext, path: str)` for the
functions named in EXPORTS; a function the report package does not provide leaves its action disabled.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

from .measurements import Measurement
from .references import ReferenceSet
from .results import ScoreResults
from .state import ReviewState

# (menu text, function name in medad_viewer.report, file dialog filter)
EXPORTS = [
    ("PDF heatmap report…", "export_pdf_report", "PDF (*.pdf)"),
    ("Score table (CSV)…", "export_scores_csv", "CSV (*.csv)"),
    ("Score table (JSON)…", "export_scores_json", "JSON (*.json)"),
    ("Anomaly maps as a volume…", "export_map_volume", "NRRD (*.nrrd);;NIfTI (*.nii.gz)"),
    ("Annotations as a label volume…", "export_annotation_volume", "NRRD (*.nrrd);;NIfTI (*.nii.gz)"),
    ("Current view as PNG…", "export_view_png", "PNG (*.png)"),
    ("DICOM Segmentation…", "export_dicom_seg", "DICOM (*.dcm)"),
    ("DICOM parametric map…", "export_dicom_pmap", "DICOM (*.dcm)"),
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
    window: tuple[float, float] | None = None  # display window (centre, width) in modality units
    window_name: str = ""
    opacity: float | None = None
    colormap: str | None = None
    flag_pct: float | None = None  # the ranking's "Flag at" (percentile of normal slices); None: threshold_pct
    measurements: list[Measurement] = field(default_factory=list)  # the session's lengths and ROIs (any series)

    def snapshot(self) -> "ExportContext":
        """A copy the export can read in a worker thread while the user goes on reviewing."""
        results = None
        if self.results is not None:
            results = copy.copy(self.results)
            results.results = dict(self.results.results)
        return replace(self, results=results, review=ReviewState.from_dict(self.review.to_dict()),
                       reference_set=self.reference_set.copy(), measurements=list(self.measurements))
