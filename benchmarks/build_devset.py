"""Build the small development set in the BMAD / MVFA-AD layout from the two sample brain MR volumes.

Two folds, so no conclusion rests on one volume:
  mr-brain-a: reference pool = normal slices of brain1; test = every slice of brain2 (labelled ones are Ungood)
  mr-brain-b: the other way round.
Slices are written as 8-bit PNGs after a per-volume percentile window of the foreground (MR has no absolute units).
A development aid only: 48 slices from two volumes say little about unseen brain MR, CT or chest X-ray.

    python benchmarks/build_devset.py [--src ../shared/sample-data/mr-brain] [--out devset]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parent.parent


def _read(path: Path) -> np.ndarray:
    img = sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS")
    return sitk.GetArrayFromImage(img)  # (z, y, x): axial slices, anterior at the top


def _to_uint8(vol: np.ndarray) -> np.ndarray:
    v = vol.astype(np.float32)
    fg = v[v > v.min()]
    lo, hi = np.percentile(fg if fg.size else v, [1.0, 99.5])
    return (np.clip((v - lo) / max(hi - lo, 1e-6), 0, 1) * 255).round().astype(np.uint8)


def build(src: Path, out: Path) -> None:
    vols = {}
    for name in ("brain1", "brain2"):
        vols[name] = (_to_uint8(_read(src / f"{name}_image.nrrd")), _read(src / f"{name}_label.nrrd") > 0)
    for fold, (train, test) in {"mr-brain-a": ("brain1", "brain2"), "mr-brain-b": ("brain2", "brain1")}.items():
        root = out / fold
        if root.exists():
            shutil.rmtree(root)
        dirs = {k: root / k for k in ("train/good/img", "test/good/img", "test/Ungood/img", "test/Ungood/anomaly_mask")}
        for d in dirs.values():
            d.mkdir(parents=True)
        img, lab = vols[train]
        n_train = 0
        for z in range(img.shape[0]):
            if not lab[z].any():
                cv2.imwrite(str(dirs["train/good/img"] / f"{train}_{z:03d}.png"), img[z])
                n_train += 1
        img, lab = vols[test]
        n_good = n_bad = 0
        for z in range(img.shape[0]):
            name = f"{test}_{z:03d}.png"
            if lab[z].any():
                cv2.imwrite(str(dirs["test/Ungood/img"] / name), img[z])
                cv2.imwrite(str(dirs["test/Ungood/anomaly_mask"] / name), lab[z].astype(np.uint8) * 255)
                n_bad += 1
            else:
                cv2.imwrite(str(dirs["test/good/img"] / name), img[z])
                n_good += 1
        print(f"{root}: train/good {n_train}, test/good {n_good}, test/Ungood {n_bad}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=REPO.parent / "shared" / "sample-data" / "mr-brain")
    ap.add_argument("--out", type=Path, default=REPO / "devset")
    args = ap.parse_args()
    build(args.src, args.out)


if __name__ == "__main__":
    main()
