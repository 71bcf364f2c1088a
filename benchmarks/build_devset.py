"""Build the development sets in the BMAD / MVFA-AD layout (train/good, test/good, test/Ungood + anomaly_mask).

Main set: the six BRATS 2013 glioma patients of ../shared/sample-data/brats2013 (skull-stripped, 1 mm, tumour
labels), split by patient — never slices of one patient on both sides:

    brats-<seq>-f0: test patients 1 and 4, reference pool = tumour-free slices of patients 2, 3, 5, 6
    brats-<seq>-f1: test patients 2 and 5, pool from 1, 3, 4, 6
    brats-<seq>-f2: test patients 3 and 6, pool from 1, 2, 4, 5

for <seq> = flair (the main sequence) and t1c (a second check: other contrast, enhancing rims). Slices whose brain
covers less than 10 % of the patient's largest brain slice are left out (almost no brain); a tumour slice has at
least 50 labelled pixels, and slices with 1-49 labelled pixels are left out of the test (neither clearly normal nor
clearly abnormal). Each volume is written as 8-bit PNGs after one window per volume (1st-99.5th percentile of the
brain), background black, axial slices in radiological orientation (anterior up, patient's right on the left).

Second check, harder: the two whole-head sample MR volumes (mr-brain/, not skull-stripped, 6.5 mm slices) as
mr-brain-a (pool brain1, test brain2) and mr-brain-b (the other way round).

BRATS is CC BY-NC-SA: the generated folders are for development only and are never bundled (devset/ is ignored).

    python benchmarks/build_devset.py [--sample-data ../shared/sample-data] [--out devset]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parent.parent
BRATS_FOLDS = {"f0": (1, 4), "f1": (2, 5), "f2": (3, 6)}
SEQUENCES = {"flair": "Flair_subtrMeanDivStd.nii.gz", "t1c": "T1c_subtrMeanDivStd.nii.gz"}
MIN_BRAIN_SHARE = 0.10  # of the patient's largest brain slice
MIN_TUMOUR_PX = 50


def _read(path: Path) -> np.ndarray:
    img = sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS")
    return sitk.GetArrayFromImage(img)  # (z, y, x): axial slices, anterior at the top


def _to_uint8(vol: np.ndarray, inside: np.ndarray) -> np.ndarray:
    v = vol.astype(np.float32)
    lo, hi = np.percentile(v[inside], [1.0, 99.5])
    out = (np.clip((v - lo) / max(hi - lo, 1e-6), 0, 1) * 255).round().astype(np.uint8)
    out[~inside] = 0
    return out


def _dirs(root: Path) -> dict[str, Path]:
    if root.exists():
        shutil.rmtree(root)
    d = {k: root / k for k in ("train/good/img", "test/good/img", "test/Ungood/img", "test/Ungood/anomaly_mask")}
    for p in d.values():
        p.mkdir(parents=True)
    return d


def _patient_slices(folder: Path, seq: str) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """(name, 8-bit slice, tumour mask or None for tumour-free) for the usable slices of one patient."""
    brain = _read(folder / "brainmask.nii.gz") > 0
    img = _to_uint8(_read(folder / SEQUENCES[seq]), brain)
    lab = _read(folder / "OTMultiClass.nii.gz") > 0
    area = brain.reshape(brain.shape[0], -1).sum(1)
    tumour = lab.reshape(lab.shape[0], -1).sum(1)
    pid = folder.name.split("_")[2].replace("pat", "p")
    out = []
    for z in range(img.shape[0]):
        if area[z] < MIN_BRAIN_SHARE * area.max():
            continue
        if tumour[z] == 0:
            out.append((f"{pid}_{z:03d}.png", img[z], None))
        elif tumour[z] >= MIN_TUMOUR_PX:
            out.append((f"{pid}_{z:03d}.png", img[z], lab[z]))
    return out


def build_brats(src: Path, out: Path) -> None:
    patients = {int(p.name.split("_")[2][3:]): p for p in sorted(src.glob("brats_2013_pat*"))}
    if len(patients) < 6:
        raise SystemExit(f"{src}: expected six BRATS patients, found {len(patients)}")
    for seq in SEQUENCES:
        slices = {pid: _patient_slices(folder, seq) for pid, folder in patients.items()}
        for fold, test in BRATS_FOLDS.items():
            root = out / f"brats-{seq}-{fold}"
            d = _dirs(root)
            counts = {"train": 0, "good": 0, "Ungood": 0}
            for pid, rows in slices.items():
                for name, img, mask in rows:
                    if pid not in test:
                        if mask is None:
                            cv2.imwrite(str(d["train/good/img"] / name), img)
                            counts["train"] += 1
                    elif mask is None:
                        cv2.imwrite(str(d["test/good/img"] / name), img)
                        counts["good"] += 1
                    else:
                        cv2.imwrite(str(d["test/Ungood/img"] / name), img)
                        cv2.imwrite(str(d["test/Ungood/anomaly_mask"] / name), mask.astype(np.uint8) * 255)
                        counts["Ungood"] += 1
            print(f"{root.name}: test patients {test}; train/good {counts['train']}, test/good {counts['good']}, "
                  f"test/Ungood {counts['Ungood']}")


def build_mr_brain(src: Path, out: Path) -> None:
    vols = {}
    for name in ("brain1", "brain2"):
        v = _read(src / f"{name}_image.nrrd").astype(np.float32)
        vols[name] = (_to_uint8(v, v > v.min()), _read(src / f"{name}_label.nrrd") > 0)
    for fold, (train, test) in {"mr-brain-a": ("brain1", "brain2"), "mr-brain-b": ("brain2", "brain1")}.items():
        d = _dirs(out / fold)
        img, lab = vols[train]
        n_train = 0
        for z in range(img.shape[0]):
            if not lab[z].any():
                cv2.imwrite(str(d["train/good/img"] / f"{train}_{z:03d}.png"), img[z])
                n_train += 1
        img, lab = vols[test]
        n_good = n_bad = 0
        for z in range(img.shape[0]):
            name = f"{test}_{z:03d}.png"
            if lab[z].any():
                cv2.imwrite(str(d["test/Ungood/img"] / name), img[z])
                cv2.imwrite(str(d["test/Ungood/anomaly_mask"] / name), lab[z].astype(np.uint8) * 255)
                n_bad += 1
            else:
                cv2.imwrite(str(d["test/good/img"] / name), img[z])
                n_good += 1
        print(f"{fold}: train/good {n_train}, test/good {n_good}, test/Ungood {n_bad}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample-data", type=Path, default=REPO.parent / "shared" / "sample-data")
    ap.add_argument("--out", type=Path, default=REPO / "devset")
    args = ap.parse_args()
    build_brats(args.sample_data / "brats2013", args.out)
    build_mr_brain(args.sample_data / "mr-brain", args.out)


if __name__ == "__main__":
    main()
