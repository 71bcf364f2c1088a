"""Engine timings with the default backbone: adaptation time, scoring time per slice, peak memory, and the ratio of
each to the training-free memory bank on the same run.

    python benchmarks/engine_perf.py [--device auto] [--k 4] [--size 256] [--slices 64] [--json]

Targets (issue 4): on a 2-core CPU, 256x256, k=4: adaptation <= 120 s, scoring <= 0.25 s per slice, peak memory
<= 4 GB; on a GPU: adaptation <= 15 s, scoring >= 100 slices/s.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from medad_viewer.engine.backbones import describe_device, load_backbone, resolve_device  # noqa: E402
from medad_viewer.engine.detector import AnomalyDetector, DetectorSettings  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _slices(size: int, n: int, images: Path | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """References and test slices from the demo MR volume (or a folder of PNGs), resized to size x size."""
    import cv2

    if images is not None:
        vol = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(images.glob("*.png"))])
    else:
        import SimpleITK as sitk
        vol = sitk.GetArrayFromImage(sitk.ReadImage(str(REPO / "resources" / "demo" / "brain1_image.nrrd")))
    vol = vol.astype(np.float32)
    lo, hi = np.percentile(vol[vol > 0], [1, 99.5])
    vol = np.clip((vol - lo) / (hi - lo), 0, 1)
    imgs = [cv2.resize(s, (size, size), interpolation=cv2.INTER_AREA) for s in vol]
    refs = [imgs[i] for i in np.linspace(2, len(imgs) - 3, 4).round().astype(int)]
    test = [imgs[i % len(imgs)] for i in range(n)]
    return refs, test


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def run(method: str, backbone, device, refs, test, batch: int) -> dict:
    s = DetectorSettings(method=method, modality="MR", input_size=None)
    t0 = time.perf_counter()
    det = AnomalyDetector(s, backbone, device).fit(refs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    fit_s = time.perf_counter() - t0
    det.score(test[:batch], batch_size=batch)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    det.score(test, batch_size=batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    score_s = (time.perf_counter() - t1) / len(test)
    return {"method": method, "fit_s": fit_s, "score_s_per_slice": score_s, "slices_per_s": 1 / score_s,
            "steps": det.adapt_report.steps if det.adapt_report else 0,
            "stopped_because": det.adapt_report.stopped_because if det.adapt_report else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--slices", type=int, default=64)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--images", type=Path, default=None, help="folder of PNG slices instead of the demo volume")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    device = resolve_device(args.device)
    batch = args.batch or (64 if device.type == "cuda" else 8)
    backbone = load_backbone(device=device)
    refs, test = _slices(args.size, args.slices, args.images)
    refs = refs[: args.k]
    memory = run("memory", backbone, device, refs, test, batch)
    adapted = run("adapted", backbone, device, refs, test, batch)
    out = {"device": describe_device(device), "backbone": f"{backbone.name} ({backbone.weights})", "k": args.k,
           "size": args.size, "torch_threads": torch.get_num_threads(),
           "memory": memory, "adapted": adapted,
           "ratio_fit_adapted_to_memory": adapted["fit_s"] / memory["fit_s"],
           "ratio_score_adapted_to_memory": adapted["score_s_per_slice"] / memory["score_s_per_slice"],
           "peak_memory_mb": _peak_mb(device)}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{out['device']}, {out['backbone']}, k={args.k}, {args.size}x{args.size}")
    for r in (memory, adapted):
        print(f"  {r['method']:8s} fit {r['fit_s']:7.1f} s   score {r['score_s_per_slice'] * 1000:7.1f} ms/slice "
              f"({r['slices_per_s']:.0f} slices/s)   steps {r['steps']} ({r['stopped_because']})")
    print(f"  adapted/memory: fit x{out['ratio_fit_adapted_to_memory']:.1f}, "
          f"score x{out['ratio_score_adapted_to_memory']:.2f}; peak memory {out['peak_memory_mb']:.0f} MB")


if __name__ == "__main__":
    main()
