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

Whole-head FLAIR, the main set for what clinicians open (lgg-flair/: 44 TCGA lower-grade glioma patients, skull and
scalp kept, 8-bit as published): lgg-f0..f3, four folds by patient (patients in name order dealt round-robin, so every
fold mixes the five institutions). Test: every head slice of the fold's patients (at least 15 % of its pixels above
20, as published), abnormal when it has any lesion pixel; reference pool: the lesion-free head slices of the other
33 patients. Slices are written as the published 8-bit values, in the viewer's orientation. The same patients are
also scored volume by volume from their own slices (the same-study protocol, benchmarks/same_study.py): that reads
the volumes directly.

Adult chest X-rays (cxr-nih/: 302 normal, 305 pneumonia, patient id in the file name): cxr-f0..f3, four folds by
patient (dealt round-robin in id order); test: every image of the fold's patients; pool: the normal images of the
others. Image labels only (no masks).

BRATS is CC BY-NC-SA and LGG is TCIA data with non-commercial terms: the generated folders are for development only
and are never bundled (devset/ is ignored).

    python benchmarks/build_devset.py [--sample-data ../shared/sample-data] [--out devset] [--sets brats,mr,lgg,cxr]
"""

from __future__ import annotations

import argparse
import shutil
import sys
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


LGG_FOLDS = 4
HEAD_MIN_SHARE = 0.15  # a head slice: at least this share of its pixels above HEAD_LEVEL (8-bit)
HEAD_LEVEL = 20


def lgg_patients(src: Path) -> list[Path]:
    return sorted(p for p in src.iterdir() if (p / "flair.nii.gz").is_file())


def lgg_volume(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(8-bit FLAIR volume, lesion mask) of one LGG patient, in the viewer's orientation (the app's own loader)."""
    sys.path.insert(0, str(REPO))
    from medad_viewer.io import load_study

    def stack(name: str) -> np.ndarray:
        s = load_study(str(folder / name)).series[0]
        return np.stack([np.asarray(s.slice(i)) for i in range(s.num_slices)])

    return stack("flair.nii.gz").astype(np.uint8), stack("mask.nii.gz") > 0


def head_slices(vol: np.ndarray) -> list[int]:
    return [z for z in range(vol.shape[0]) if (vol[z] > HEAD_LEVEL).mean() >= HEAD_MIN_SHARE]


def build_lgg(src: Path, out: Path) -> None:
    patients = lgg_patients(src)
    if len(patients) < LGG_FOLDS:
        raise SystemExit(f"{src}: expected the LGG patients, found {len(patients)}")
    vols = {p.name: lgg_volume(p) for p in patients}
    for f in range(LGG_FOLDS):
        test = {p.name for i, p in enumerate(patients) if i % LGG_FOLDS == f}
        d = _dirs(out / f"lgg-f{f}")
        counts = {"train": 0, "good": 0, "Ungood": 0}
        for name, (vol, mask) in vols.items():
            for z in head_slices(vol):
                fname = f"{name}_{z:03d}.png"
                lesion = bool(mask[z].any())
                if name not in test:
                    if not lesion:
                        cv2.imwrite(str(d["train/good/img"] / fname), vol[z])
                        counts["train"] += 1
                elif lesion:
                    cv2.imwrite(str(d["test/Ungood/img"] / fname), vol[z])
                    cv2.imwrite(str(d["test/Ungood/anomaly_mask"] / fname), mask[z].astype(np.uint8) * 255)
                    counts["Ungood"] += 1
                else:
                    cv2.imwrite(str(d["test/good/img"] / fname), vol[z])
                    counts["good"] += 1
        print(f"lgg-f{f}: {len(test)} test patients; train/good {counts['train']}, test/good {counts['good']}, "
              f"test/Ungood {counts['Ungood']}")


CXR_FOLDS = 4


def build_cxr(src: Path, out: Path) -> None:
    files = {k: sorted((src / k).glob("*.png")) for k in ("normal", "pneumonia")}
    if not files["normal"] or not files["pneumonia"]:
        raise SystemExit(f"{src}: expected normal/ and pneumonia/ PNGs")
    ids = sorted({p.name[:8] for k in files for p in files[k]})
    fold_of = {pid: i % CXR_FOLDS for i, pid in enumerate(ids)}
    for f in range(CXR_FOLDS):
        d = _dirs(out / f"cxr-f{f}")
        shutil.rmtree(d["test/Ungood/anomaly_mask"])  # image labels only
        counts = {"train": 0, "good": 0, "Ungood": 0}
        for k, paths in files.items():
            for p in paths:
                if fold_of[p.name[:8]] != f:
                    if k == "normal":
                        shutil.copyfile(p, d["train/good/img"] / p.name)
                        counts["train"] += 1
                elif k == "normal":
                    shutil.copyfile(p, d["test/good/img"] / p.name)
                    counts["good"] += 1
                else:
                    shutil.copyfile(p, d["test/Ungood/img"] / p.name)
                    counts["Ungood"] += 1
        print(f"cxr-f{f}: train/good {counts['train']}, test/good {counts['good']}, test/Ungood {counts['Ungood']}")


BUILDERS = {"brats": ("brats2013", build_brats), "mr": ("mr-brain", build_mr_brain), "lgg": ("lgg-flair", build_lgg),
            "cxr": ("cxr-nih", build_cxr)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample-data", type=Path, default=REPO.parent / "shared" / "sample-data")
    ap.add_argument("--out", type=Path, default=REPO / "devset")
    ap.add_argument("--sets", default=",".join(BUILDERS))
    args = ap.parse_args()
    for name in args.sets.split(","):
        folder, build = BUILDERS[name]
        if not (args.sample_data / folder).is_dir():
            raise SystemExit(f"{args.sample_data / folder} is missing: the development data live in ../shared/sample-data "
                             f"(see its README); pass --sample-data")
        build(args.sample_data / folder, args.out)


if __name__ == "__main__":
    main()
