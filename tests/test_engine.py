"""Engine behaviour on real MR slices with small inputs: adapters, memory bank, adaptation, save/load, cancel."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medad_viewer.engine.adapt import AdaptSettings
from medad_viewer.io.atomic import leftover_temporaries
from medad_viewer.engine.adapters import LevelAdapter
from medad_viewer.engine.backbones import TINY_CLIP_CONFIG, load_backbone, load_open_clip, WeightsUnavailable
from medad_viewer.engine.detector import AnomalyDetector, DetectorSettings
from medad_viewer.engine.pipeline import fit_detector
from medad_viewer.engine.jobs import CancelToken, Cancelled
from medad_viewer.engine.memory_bank import MemoryBank, greedy_coreset
from medad_viewer.engine.model import AnomalyModel

FAST = AdaptSettings(max_steps=4, val_every=2, pool_size=16, batch_size=8, seed=0)


@pytest.fixture(scope="module")
def mr(sample_data):
    """brain2 slices in [0, 1] and its tumour labels (z, y, x)."""
    img = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_data / "mr-brain" / "brain2_image.nrrd"))).astype(np.float32)
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_data / "mr-brain" / "brain2_label.nrrd"))) > 0
    lo, hi = np.percentile(img[img > 0], [1, 99.5])
    return np.clip((img - lo) / (hi - lo), 0, 1), lab


@pytest.fixture(scope="module")
def effnet():
    return load_backbone("efficientnet-lite2")


def _clip_missing() -> str | None:
    """Why the optional CLIP backbones cannot run here, or None (installer/setup.sh leaves them out where no
    torchvision imports beside the installed torch, e.g. a CPU build of torch next to PyPI's CUDA torchvision)."""
    try:
        import open_clip  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, or torchvision's RuntimeError
        return f"CLIP backbones not installed here ({type(exc).__name__}: {exc})"
    return None


needs_clip = pytest.mark.skipif(_clip_missing() is not None, reason=str(_clip_missing()))


@pytest.fixture(scope="module")
def tiny_clip():
    if _clip_missing():
        pytest.skip(_clip_missing())
    return load_open_clip("medad-tiny-test", "random", model_cfg=TINY_CLIP_CONFIG)


def normal_refs(mr, n=4):
    img, lab = mr
    normal = [z for z in range(6, 20) if not lab[z].any()]
    return [img[z] for z in normal[:n]]


def test_default_backbone_is_pretrained_and_says_so(effnet):
    assert effnet.pretrained
    assert "ImageNet" in effnet.weights
    feats = effnet(effnet.preprocess(torch.rand(1, 1, 96, 96)))
    assert [f.shape[1] for f in feats] == effnet.level_dims


def test_random_clip_is_labelled_untrained(tiny_clip):
    assert not tiny_clip.pretrained
    assert "UNTRAINED" in tiny_clip.weights


@needs_clip
def test_missing_clip_weights_give_a_clear_message(tmp_path):
    with pytest.raises(WeightsUnavailable, match="checkpoint"):
        load_open_clip("ViT-B-16", "no-such-tag")


def test_local_checkpoint_round_trip(tmp_path, tiny_clip):
    from safetensors.torch import save_file
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_clip.model.state_dict().items()}, str(path))
    loaded = load_open_clip("medad-tiny-test", str(path), model_cfg=TINY_CLIP_CONFIG)
    assert loaded.pretrained and "tiny.safetensors" in loaded.weights
    x = tiny_clip.preprocess(torch.rand(2, 1, 64, 64))
    for a, b in zip(tiny_clip(x), loaded(x)):
        assert torch.allclose(a, b)


def test_adapter_is_identity_at_initialisation():
    ad = LevelAdapter(32)
    x = torch.randn(2, 10, 32)
    blended, seg, det = ad(x)
    assert torch.equal(seg, x) and torch.equal(det, x)
    assert torch.allclose(blended, x, atol=1e-6)


@pytest.mark.parametrize("which", ["effnet", "tiny_clip"])
def test_adapted_model_equals_frozen_backbone_at_initialisation(which, request):
    bb = request.getfixturevalue(which)
    levels = list(range(len(bb.level_dims)))[:3]
    model = AnomalyModel(bb, levels, adapters=True, heads=None)
    x = bb.preprocess(torch.rand(2, 1, 64, 64))
    frozen = bb(x)
    got = model.features(x).seg
    for j, lvl in enumerate(levels):
        assert torch.allclose(got[j], frozen[lvl], atol=1e-5)
    if which == "tiny_clip":
        assert model.stream  # MVFA-AD: adapter outputs feed back into the ViT


def test_memory_bank_scores_references_as_normal_and_changes_as_anomalous(mr, effnet):
    refs = normal_refs(mr, 3)
    det = fit_detector(refs, DetectorSettings(method="memory", input_size=128, modality="MR"), backbone=effnet)
    same = det.score([refs[0]])[0]
    changed = refs[0].copy()
    changed[50:80, 60:90] = 1.0  # a bright square inside the brain
    out = det.score([changed])[0]
    assert out.map.shape == refs[0].shape
    assert out.score > same.score
    inside = out.map[50:80, 60:90].mean()
    assert inside > 3 * max(out.map[150:200, 60:200].mean(), 1e-3)
    assert out.percentile > same.percentile
    assert np.allclose(out.map[:5, :5], out.map.min(), atol=1e-5), "air outside the head is never anomalous"
    assert out.map.min() < 0


def test_coreset_picks_distinct_rows_covering_clusters():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(500, 8, generator=g) * 0.01 + c for c in (0.0, 5.0, -5.0)])
    idx = greedy_coreset(x, 3)
    assert len(set(idx.tolist())) == 3
    centres = sorted(round(float(x[i].mean())) for i in idx)
    assert centres == [-5, 0, 5]


def test_memory_bank_leave_one_out():
    bank = MemoryBank()
    f = torch.randn(2, 4, 3, 3)
    bank.fit(f, torch.tensor([0, 1]))
    with_self = bank.score(f[:1])
    without = bank.score(f[:1], exclude_owners=(0,))
    assert float(with_self.max()) < 1e-5
    assert float(without.min()) > 1e-3


def test_adapted_save_load_gives_identical_maps(tmp_path, mr, effnet):
    refs = normal_refs(mr, 4)
    s = DetectorSettings(method="adapted", input_size=128, modality="MR", adapt=FAST)
    det = fit_detector(refs, s, backbone=effnet)
    assert det.adapt_report is not None and det.adapt_report.steps >= 1
    img, lab = mr
    tumour = [z for z in range(img.shape[0]) if lab[z].any()][0]
    before = det.score([img[tumour]])[0]
    det.save(tmp_path / "refs-a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["refs-a.json", "refs-a.safetensors"]
    assert not leftover_temporaries(tmp_path)
    again = AnomalyDetector.load(tmp_path / "refs-a", backbone=effnet)
    after = again.score([img[tumour]])[0]
    np.testing.assert_array_equal(before.map, after.map)
    assert again.adapt_report == det.adapt_report  # how it adapted, for the record (run.json of a batch run)
    assert before.score == after.score and before.percentile == after.percentile
    sidecar = (tmp_path / "refs-a.json").read_text()
    assert "efficientnet-lite2" in sidecar and "ImageNet" in sidecar and len(det.reference_hashes) == 4


def test_adaptation_is_reproducible_with_a_seed(mr, effnet):
    refs = normal_refs(mr, 3)
    s = DetectorSettings(method="adapted", input_size=96, modality="MR", adapt=FAST)
    a = fit_detector(refs, s, backbone=effnet).score([refs[0]])[0]
    b = fit_detector(refs, s, backbone=effnet).score([refs[0]])[0]
    np.testing.assert_allclose(a.map, b.map, atol=1e-5)


def test_cancel_stops_adaptation_promptly(mr, effnet):
    refs = normal_refs(mr, 4)
    s = DetectorSettings(method="adapted", input_size=128, modality="MR",
                         adapt=AdaptSettings(max_steps=100_000, time_budget_s=600, pool_size=64, val_every=50))
    token = CancelToken()
    seen = []

    def progress(fraction, message):
        seen.append(message)

    timer = threading.Timer(2.0, token.cancel)
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        fit_detector(refs, s, backbone=effnet, progress=progress, cancel=token)
    waited = time.monotonic() - t0 - 2.0
    assert waited < 1.0, f"cancel took {waited:.2f}s"
    assert seen


def test_time_budget_is_respected(mr, effnet):
    refs = normal_refs(mr, 2)
    s = DetectorSettings(method="adapted", input_size=96, modality="MR",
                         adapt=AdaptSettings(max_steps=100_000, time_budget_s=3.0, pool_size=16, val_every=1000))
    det = fit_detector(refs, s, backbone=effnet)
    assert det.adapt_report.stopped_because == "time budget"
    assert det.adapt_report.steps < 100_000
    # Generous bound: a loaded 2-core CI machine runs this several times slower than an idle one.
    assert det.adapt_report.seconds < 3 * 3.0


@pytest.mark.parametrize("method", ["memory", "zero", "adapted"])
def test_tiny_open_clip_runs_every_method(method, mr, tiny_clip, tmp_path):
    refs = normal_refs(mr, 2)
    s = DetectorSettings(method=method, modality="MR", adapt=replace(FAST, pool_size=8))
    # The training-free method needs no references at all.
    det = fit_detector(refs if method != "zero" else [], s, backbone=tiny_clip)
    out = det.score([mr[0][10]])[0]
    assert out.map.shape == mr[0][10].shape and np.isfinite(out.map).all()
    assert det.describe()["pretrained"] is False
    if method == "adapted":
        det.save(tmp_path / "clip")
        again = AnomalyDetector.load(tmp_path / "clip", backbone=tiny_clip)
        np.testing.assert_array_equal(again.score([mr[0][10]])[0].map, out.map)


def test_zero_shot_needs_a_vision_language_backbone(effnet):
    with pytest.raises(ValueError, match="vision-language"):
        AnomalyDetector(DetectorSettings(method="zero"), effnet, torch.device("cpu"))


def test_user_marked_abnormal_slices_are_used_as_positives(mr, effnet):
    """With synthesis switched off, only the user's abnormal example can teach the head what a lesion is (100 steps:
    30 moved the tumour's mean map value by 0.004, too little to tell from run-to-run noise; 100 move it by 0.25)."""
    img, lab = mr
    refs = normal_refs(mr, 3)
    tumour = [z for z in range(img.shape[0]) if lab[z].any()]
    example = (img[tumour[0]], lab[tumour[0]])
    adapt = AdaptSettings(max_steps=100, val_every=1000, pool_size=16, batch_size=8, anomaly_fraction=0.0, seed=0)
    s = DetectorSettings(method="adapted", input_size=96, modality="MR", fusion_weight=0.0, adapt=adapt)
    without = fit_detector(refs, s, backbone=effnet)
    with_pos = fit_detector(refs, s, backbone=effnet, abnormal=[example])
    target = img[tumour[-1]]
    inside = lab[tumour[-1]]
    contrast = [d.score([target])[0].map[inside].mean() for d in (without, with_pos)]
    assert contrast[1] > contrast[0]


def test_clip_without_open_clip_says_what_to_do(monkeypatch):
    """The bundle and a CPU-torch install leave open_clip and torchvision out: asking for CLIP says so in plain words."""
    import sys

    monkeypatch.setitem(sys.modules, "open_clip", None)  # as if it were not installed
    with pytest.raises(WeightsUnavailable) as err:
        load_open_clip("ViT-B-16", "openai")
    assert "[clip]" in str(err.value) and "EfficientNet-Lite2" in str(err.value)
