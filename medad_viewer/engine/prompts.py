"""Text prompt ensembles for vision-language backbones: normal vs. abnormal, per organ and modality.

State words × templates as in MVFA-AD / APRIL-GAN; organ- and finding-level phrases as in MedicalCLIP; lung-position
prompts for chest X-ray as in PPAD.
"""

from __future__ import annotations

from dataclasses import dataclass

TEMPLATES = (
    "a {modality} image of a {state} {organ}.",
    "a {modality} scan showing a {state} {organ}.",
    "a cropped {modality} image of the {state} {organ}.",
    "a close-up {modality} image of a {state} {organ}.",
    "a photo of a {state} {organ}.",
    "this is a {state} {organ} on {modality}.",
    "a medical image of a {state} {organ}.",
)

NORMAL_STATES = ("normal", "healthy", "unremarkable", "typical", "clean", "flawless")
ABNORMAL_STATES = ("abnormal", "anomalous", "diseased", "pathological", "damaged", "lesioned")

# Fine-grained findings per organ (MedicalCLIP-style hierarchy: organ -> finding).
FINDINGS = {
    "brain": ("tumor", "glioma", "mass with surrounding edema", "hemorrhage", "infarct", "enhancing lesion"),
    "chest": ("lung nodule", "pneumonia", "consolidation", "pleural effusion", "tuberculosis", "mass"),
    "lung": ("nodule", "consolidation", "ground-glass opacity", "mass", "emphysema"),
    "liver": ("liver lesion", "tumor", "cyst", "metastasis"),
    "abdomen": ("mass", "lesion", "fluid collection", "tumor"),
}

MODALITY_WORDS = {"CT": "CT", "MR": "MRI", "CR": "chest X-ray", "DX": "X-ray", "OT": "medical"}

# PPAD: position-guided prompts for chest X-ray.
LUNG_POSITIONS = ("left upper lung", "left lower lung", "right upper lung", "right lower lung")


@dataclass(frozen=True)
class PromptEnsemble:
    normal: tuple[str, ...]
    abnormal: tuple[str, ...]


def build_prompts(modality: str = "OT", organ: str = "body", positions: bool | None = None) -> PromptEnsemble:
    """All normal and abnormal prompts for one modality and organ."""
    mod = MODALITY_WORDS.get(modality.upper(), "medical")
    normal = [t.format(modality=mod, state=s, organ=organ) for t in TEMPLATES for s in NORMAL_STATES]
    abnormal = [t.format(modality=mod, state=s, organ=organ) for t in TEMPLATES for s in ABNORMAL_STATES]
    for finding in FINDINGS.get(organ, ()):
        abnormal.append(f"a {mod} image of a {organ} with {finding}.")
        abnormal.append(f"a {mod} image showing {finding}.")
    normal.append(f"a {mod} image of a {organ} with no findings.")
    use_positions = positions if positions is not None else (modality.upper() in ("CR", "DX") and organ == "chest")
    if use_positions:
        for pos in LUNG_POSITIONS:
            normal.append(f"a chest X-ray with a clear {pos}.")
            abnormal.append(f"a chest X-ray with an opacity in the {pos}.")
    return PromptEnsemble(tuple(normal), tuple(abnormal))


def default_organ(modality: str) -> str:
    return {"CR": "chest", "DX": "chest", "MR": "brain"}.get(modality.upper(), "body")
