"""De-identification helpers: which metadata keys identify a patient, stable pseudonyms, stripping.

Loaders put identifying values in `Series.identifiers` and keep `Series.metadata` free of them;
exports should use `deidentify()` on anything they copy and `pseudonym()` instead of UIDs or
names. Note that `Series.source` (a path: folder names often carry patient names),
`Series.description` (free text) and `Series.uid` (a DICOM UID) may identify too: exports should
not copy them verbatim.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

# DICOM tags (as SimpleITK spells them, 'gggg|eeee') whose values identify a patient, a visit,
# staff or a place, or tie the data to hospital records (UIDs, dates). Loaders read these into
# `Series.identifiers` under the keyword on the right.
IDENTIFYING_TAGS: dict[str, str] = {
    "0008|0020": "StudyDate",
    "0008|0021": "SeriesDate",
    "0008|0022": "AcquisitionDate",
    "0008|0023": "ContentDate",
    "0008|002a": "AcquisitionDateTime",
    "0008|0030": "StudyTime",
    "0008|0031": "SeriesTime",
    "0008|0032": "AcquisitionTime",
    "0008|0033": "ContentTime",
    "0008|0050": "AccessionNumber",
    "0008|0080": "InstitutionName",
    "0008|0081": "InstitutionAddress",
    "0008|0090": "ReferringPhysicianName",
    "0008|0092": "ReferringPhysicianAddress",
    "0008|0094": "ReferringPhysicianTelephoneNumbers",
    "0008|1010": "StationName",
    "0008|1030": "StudyDescription",
    "0008|1040": "InstitutionalDepartmentName",
    "0008|1048": "PhysiciansOfRecord",
    "0008|1050": "PerformingPhysicianName",
    "0008|1060": "NameOfPhysiciansReadingStudy",
    "0008|1070": "OperatorsName",
    "0010|0010": "PatientName",
    "0010|0020": "PatientID",
    "0010|0021": "IssuerOfPatientID",
    "0010|0030": "PatientBirthDate",
    "0010|0032": "PatientBirthTime",
    "0010|0040": "PatientSex",
    "0010|1000": "OtherPatientIDs",
    "0010|1001": "OtherPatientNames",
    "0010|1010": "PatientAge",
    "0010|1020": "PatientSize",
    "0010|1030": "PatientWeight",
    "0010|1040": "PatientAddress",
    "0010|2154": "PatientTelephoneNumbers",
    "0010|2160": "EthnicGroup",
    "0010|4000": "PatientComments",
    "0018|1000": "DeviceSerialNumber",
    "0018|1030": "ProtocolName",
    "0020|000d": "StudyInstanceUID",
    "0020|000e": "SeriesInstanceUID",
    "0020|0010": "StudyID",
    "0020|0052": "FrameOfReferenceUID",
    "0032|1032": "RequestingPhysician",
    "0032|1060": "RequestedProcedureDescription",
    "0040|0244": "PerformedProcedureStepStartDate",
    "0040|0245": "PerformedProcedureStepStartTime",
    "0040|0253": "PerformedProcedureStepID",
    "0040|0254": "PerformedProcedureStepDescription",
}

# Free-text header fields of NIfTI / NRRD / MetaImage files, which can hold anything.
FREE_TEXT_KEYS: frozenset[str] = frozenset({"descrip", "aux_file", "intent_name", "ITK_FileNotes", "NRRD_content"})
# Other keys loaders put in `Series.identifiers`: file names often carry patient names.
OTHER_IDENTIFYING_KEYS: frozenset[str] = frozenset({"SourceFiles"})

IDENTIFYING_KEYS: frozenset[str] = frozenset(IDENTIFYING_TAGS.values()) | frozenset(IDENTIFYING_TAGS) | FREE_TEXT_KEYS | OTHER_IDENTIFYING_KEYS

_LOWER_KEYS = frozenset(k.lower() for k in IDENTIFYING_KEYS)
# Keyword shapes that are identifying whatever the exact tag: dates, UIDs, and anything in the
# DICOM patient group (0010). Not "...Time": EchoTime and ExposureTime are acquisition
# parameters; clock times are listed above.
_PATTERN = re.compile(r"(date|datetime|uid)$|^0010\|", re.IGNORECASE)
# UIDs that name a kind of object or encoding, fixed by the standard, not an instance.
_STANDARD_UIDS = frozenset({"sopclassuid", "mediastoragesopclassuid", "transfersyntaxuid"})

# Fixed so that pseudonyms are the same on every machine and every run: a report made today and
# one made next month call the same study by the same name.
_DEFAULT_SALT = "medad-viewer/pseudonym/v1"


def is_identifying(key: str) -> bool:
    """Whether a metadata key (DICOM keyword, 'gggg|eeee' tag or free-text field) may identify."""
    lower = key.lower()
    if lower in _STANDARD_UIDS:
        return False
    return lower in _LOWER_KEYS or bool(_PATTERN.search(key))


def pseudonym(uid: str, *, prefix: str = "Study", salt: str | None = None) -> str:
    """A stable short label such as 'Study-3F9A2C' for a series or study UID (salted SHA-256).

    The same uid and salt always give the same label; the uid cannot be read back from it.
    """
    digest = hashlib.sha256(((salt if salt is not None else _DEFAULT_SALT) + "\0" + str(uid)).encode("utf-8"))
    return f"{prefix}-{digest.hexdigest()[:6].upper()}"


def deidentify(metadata: dict[str, Any]) -> dict[str, Any]:
    """A copy of `metadata` without identifying keys (nested dicts and lists of dicts included)."""
    return {key: _clean(value) for key, value in metadata.items() if not is_identifying(str(key))}


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return deidentify(value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_clean(v) for v in value)
    return value
