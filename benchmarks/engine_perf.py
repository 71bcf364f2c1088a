"""Engine timings with the default backbone, as figures and ratios from one run:

    python benchmarks/engine_perf.py [--device auto] [--size 256] [--slices 48] [--json]

- the bare backbone forward pass per slice (up to the levels the detector uses), and scoring per slice for the
  memory bank and the adapted method, with their ratio to it (issue 19's target <= 1.5): slices of a volume, which
  share the volume's symmetry-axis angle (`volume_midline_angle`, found once: a series-level step, timed and
  reported on its own), and the same slices as independent images, each searching its own angle. The slice's own mirror,
  on by default for cross-sections, is made from the slice's own features (`mirror_pass` "features"); beside it
  the mirror as a second forward pass of the reflected slice (`mirror_pass` "image", the default before), no
  mirror at all, and a FLAIR series (the hyperintensity gate). Shared 2-core machines drift by tens of percent
  within minutes, so the forward pass and the settings are timed in turn, `--rounds` times, and each keeps its
  best round: the ratios compare times taken minutes apart at most;
- the series-level step (`through_plane`, on for volumes): scoring the demo volume through `score_series` with it
  on and off, per slice, and the ratio (issue 19's target for a series-level step: <= 0.5 more);
- scoring per slice with k = 16 references against k = 4 (target <= 1.2: the bank is a coreset of fixed size);
- fitting time: memory bank (target < 5 s) and adaptation (target <= 60 s on 2 CPU cores, k = 4);
- peak memory.
Slices come from the demo MR volume (whole head), prepared exactly as `score` prepares them.
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
from medad_viewer.engine.preprocess import normalizer_for_series  # noqa: E402
from medad_viewer.engine.series_scores import volume_midline_angle  # noqa: E402
from medad_viewer.io import load_study  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _slices() -> list[np.ndarray]:
    series = load_study(str(REPO / "resources" / "demo" / "brain1_image.nrrd")).series[0]
    norm = normalizer_for_series(series)
    return [norm(series.slice(i)) for i in range(series.num_slices)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def _demo_series():
    return load_study(str(REPO / "resources" / "demo" / "brain1_image.nrrd")).series[0]


def _score_time(det: AnomalyDetector, test: list[np.ndarray], batch: int, repeats: int = 2,
                angle: float | None = None) -> float:
    """Per slice; `angle`: the slices are a volume's, with that symmetry-axis angle (None: independent images)."""
    det.score(test[:batch], batch_size=batch, midline_angle=angle)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _sync(det.device)
        t0 = time.perf_counter()
        det.score(test, batch_size=batch, midline_angle=angle)
        _sync(det.device)
        best = min(best, (time.perf_counter() - t0) / len(test))
    return best


@torch.no_grad()
def _forward_time(det: AnomalyDetector, test: list[np.ndarray], batch: int, repeats: int = 2) -> float:
    """The backbone alone, on already-resized inputs, as deep as the detector's levels need."""
    import cv2

    x = [cv2.resize(im, (det.size, det.size), interpolation=cv2.INTER_AREA) for im in test]
    upto = max(det.levels)
    det.backbone(det._to_input(x[:batch]), upto=upto)
    best = float("inf")
    for _ in range(repeats):
        _sync(det.device)
        t0 = time.perf_counter()
        for s in range(0, len(x), batch):
            det.backbone(det._to_input(x[s: s + batch]), upto=upto)
        _sync(det.device)
        best = min(best, (time.perf_counter() - t0) / len(x))
    return best


def _series_time(det: AnomalyDetector, slices: int, batch: int, repeats: int = 2) -> tuple[float, float]:
    """Per slice, the demo volume's first `slices` slices through `score_series` (as `score` and the window do),
    with the through-plane step and without it."""
    from dataclasses import replace

    from medad_viewer.engine.series_scores import score_series

    series = _demo_series()
    idx = [i % series.num_slices for i in range(slices)]
    idx = list(dict.fromkeys(idx))
    on = det.settings
    out = []
    for setting in ("neighbours", "off"):
        det.settings = replace(on, through_plane=setting)
        best = float("inf")
        for _ in range(repeats):
            _sync(det.device)
            t0 = time.perf_counter()
            score_series(det, series, idx, batch_size=batch)
            _sync(det.device)
            best = min(best, (time.perf_counter() - t0) / len(idx))
        out.append(best)
    det.settings = on
    return out[0], out[1]


def _fit(method: str, backbone, device, refs, size: int, seed: int = 0, **kw) -> tuple[AnomalyDetector, float]:
    s = DetectorSettings(method=method, input_size=size, modality="MR", **kw)
    t0 = time.perf_counter()
    det = AnomalyDetector(s, backbone, device).fit(refs)
    _sync(device)
    return det, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--slices", type=int, default=48)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3, help="the forward pass and each setting timed in turn, best of")
    ap.add_argument("--no-adapted", action="store_true", help="skip the adapted method (its fit takes longest)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    device = resolve_device(args.device)
    batch = args.batch or (64 if device.type == "cuda" else 8)
    backbone = load_backbone(device=device)
    vol = _slices()
    test = [vol[i % len(vol)] for i in range(args.slices)]
    pick = lambda k: [vol[int(i)] for i in np.linspace(3, len(vol) - 3, k).round()]  # noqa: E731
    refs4 = pick(4)
    refs16 = [vol[i] for i in range(2, len(vol) - 2)][:16]
    mem4, fit_mem = _fit("memory", backbone, device, refs4, args.size)
    mem16, fit_mem16 = _fit("memory", backbone, device, refs16, args.size)
    dets = {"k4": mem4, "k16": mem16,
            "no_mirror": _fit("memory", backbone, device, refs4, args.size, self_mirror="off")[0],
            "flair": _fit("memory", backbone, device, refs4, args.size, sequence="FLAIR")[0],
            "mirror_image": _fit("memory", backbone, device, refs4, args.size, mirror_pass="image")[0]}
    series = _demo_series()
    norm = normalizer_for_series(series)
    volume_midline_angle(mem4, series, norm)  # warm-up
    t0 = time.perf_counter()
    angle = volume_midline_angle(mem4, series, norm)
    angle_s = time.perf_counter() - t0
    best = {"forward": float("inf"), "images": float("inf"), **{k: float("inf") for k in dets}}
    for _ in range(args.rounds):
        best["forward"] = min(best["forward"], _forward_time(mem4, test, batch, repeats=1))
        for k, det in dets.items():
            best[k] = min(best[k], _score_time(det, test, batch, repeats=1, angle=angle))
        best["images"] = min(best["images"], _score_time(mem4, test, batch, repeats=1))
    fwd, score_mem4, score_mem16 = best["forward"], best["k4"], best["k16"]
    score_plain, score_flair, score_image = best["no_mirror"], best["flair"], best["mirror_image"]
    series_on, series_off = _series_time(mem4, args.slices, batch)
    out = {"device": describe_device(device), "backbone": f"{backbone.name} ({backbone.weights})",
           "size": args.size, "torch_threads": torch.get_num_threads(), "slices": len(test),
           "levels": mem4.levels, "bank_patches_k4": len(mem4.bank), "bank_patches_k16": len(mem16.bank),
           "forward_s_per_slice": fwd,
           "memory": {"fit_s_k4": fit_mem, "fit_s_k16": fit_mem16, "score_s_per_slice_k4": score_mem4,
                      "score_s_per_slice_k16": score_mem16,
                      "ratio_score_to_forward": score_mem4 / fwd, "ratio_k16_to_k4": score_mem16 / score_mem4,
                      "score_s_per_slice_no_mirror": score_plain, "ratio_no_mirror_to_forward": score_plain / fwd,
                      "score_s_per_slice_flair": score_flair, "ratio_flair_to_forward": score_flair / fwd,
                      "volume_angle_s": angle_s, "volume_slices": series.num_slices,
                      "ratio_volume_angle_to_volume": angle_s / (series.num_slices * score_mem4),
                      "score_s_per_slice_images": best["images"],
                      "ratio_images_to_forward": best["images"] / fwd,
                      "score_s_per_slice_mirror_image": score_image,
                      "ratio_mirror_image_to_forward": score_image / fwd,
                      "series_s_per_slice_through_plane": series_on, "series_s_per_slice_plain": series_off,
                      "ratio_through_plane_to_plain": series_on / series_off}}
    if not args.no_adapted:
        ad, fit_ad = _fit("adapted", backbone, device, refs4, args.size)
        score_ad = _score_time(ad, test, batch)
        out["adapted"] = {"fit_s_k4": fit_ad, "steps": ad.adapt_report.steps,
                          "stopped_because": ad.adapt_report.stopped_because, "score_s_per_slice_k4": score_ad,
                          "ratio_score_to_forward": score_ad / fwd}
    out["peak_memory_mb"] = _peak_mb(device)
    if args.json:
        print(json.dumps(out))
        return
    m = out["memory"]
    print(f"{out['device']}, {out['backbone']}, {args.size}x{args.size}, levels {out['levels']}")
    print(f"  backbone forward         {fwd * 1000:7.1f} ms/slice (best of {args.rounds} rounds, each setting in turn)")
    print(f"  memory   fit k=4 {fit_mem:5.1f} s, k=16 {fit_mem16:5.1f} s;  score k=4 {score_mem4 * 1000:6.1f} ms/slice "
          f"(x{m['ratio_score_to_forward']:.2f} forward), k=16 {score_mem16 * 1000:6.1f} ms/slice "
          f"(x{m['ratio_k16_to_k4']:.2f} k=4); bank {out['bank_patches_k4']} / {out['bank_patches_k16']} patches")
    print(f"           slices of a volume above (its axis angle found once, {angle_s * 1000:.0f} ms: x"
          f"{m['ratio_volume_angle_to_volume']:.3f} of scoring its {series.num_slices} slices); the same slices as "
          f"independent images {best['images'] * 1000:6.1f} ms/slice (x{m['ratio_images_to_forward']:.2f} forward)")
    print(f"           without the slice's mirror {score_plain * 1000:6.1f} ms/slice (x{m['ratio_no_mirror_to_forward']:.2f} "
          f"forward); FLAIR (hyperintensity gate) {score_flair * 1000:6.1f} ms/slice (x{m['ratio_flair_to_forward']:.2f})")
    print(f"           the mirror as a second forward pass {score_image * 1000:6.1f} ms/slice "
          f"(x{m['ratio_mirror_image_to_forward']:.2f} forward); a volume through score_series "
          f"{series_on * 1000:6.1f} ms/slice with the through-plane step, {series_off * 1000:6.1f} without "
          f"(x{m['ratio_through_plane_to_plain']:.2f})")
    if "adapted" in out:
        a = out["adapted"]
        print(f"  adapted  fit k=4 {a['fit_s_k4']:5.1f} s ({a['steps']} steps, {a['stopped_because']});  score "
              f"{a['score_s_per_slice_k4'] * 1000:6.1f} ms/slice (x{a['ratio_score_to_forward']:.2f} forward)")
    print(f"  peak memory {out['peak_memory_mb']:.0f} MB")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
