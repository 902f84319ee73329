"""Evaluation metrics against independent references (numpy/scipy/scikit-image) and closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import scipy.spatial.distance
import torch
from skimage.metrics import mean_squared_error, normalized_root_mse, structural_similarity

from medlsdm.errors import DataError, MedLSDMError
from medlsdm.evaluation.features import (
    available_feature_metrics,
    batched_features,
    fid_2d,
    fid_3d,
    inception_features,
    inception_slice_features,
    lpips_slices,
    segnet_feature_distance,
    segnet_features,
    volume_slices,
)
from medlsdm.evaluation.reconstruction import reconstruct
from medlsdm.metrics.distribution import (
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    median_heuristic,
    mmd,
)
from medlsdm.metrics.image import MS_SSIM_WEIGHTS, ms_ssim, nmse, paired_metrics, psnr, rmse, ssim
from medlsdm.metrics.overlap import dice_per_class, mean_dice

pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(shape, seed=0, noise=0.2):
    rng = np.random.default_rng(seed)
    x = scipy.ndimage.gaussian_filter(rng.uniform(-1, 1, shape), 1.0) * 3
    y = np.clip(x + rng.normal(0, noise, shape), -1, 1)
    return np.clip(x, -1, 1), y


# ------------------------------------------------------------------ RMSE / NMSE
def test_rmse_nmse_against_skimage():
    x, y = _pair((6, 10, 12))
    assert rmse(x, y) == pytest.approx(math.sqrt(mean_squared_error(x, y)))
    # NMSE = ‖x − y‖² / ‖y‖² (y the reference) = skimage's euclidean NRMSE(image_true=y)²
    assert nmse(x, y) == pytest.approx(normalized_root_mse(y, x, normalization="euclidean") ** 2)
    assert nmse(y, y) == 0 and rmse(x, x) == 0
    # PSNR and RMSE agree on data in [-1, 1] (data_range 2)
    assert psnr(x, y, data_range=2.0) == pytest.approx(20 * math.log10(2.0 / rmse(x, y)))
    with pytest.raises(DataError, match="all zeros"):
        nmse(x, np.zeros_like(x))


# ------------------------------------------------------------------ MS-SSIM
def _reference_terms(x, y, data_range, sigma=1.5):
    """SSIM and cs with scipy's Gaussian filter, valid region (skimage's procedure)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    f = lambda a: scipy.ndimage.gaussian_filter(a, sigma, truncate=3.5)  # noqa: E731
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    cs = (2 * cxy + c2) / (vx + vy + c2)
    s = (2 * mx * my + c1) / (mx**2 + my**2 + c1) * cs
    crop = tuple(slice(5, -5) for _ in x.shape)
    return s[crop].mean(), cs[crop].mean()


def _halve(a):
    a = a[tuple(slice(0, s - s % 2) for s in a.shape)]
    for axis in range(a.ndim):
        a = a.reshape(*a.shape[:axis], a.shape[axis] // 2, 2, *a.shape[axis + 1:]).mean(axis + 1)
    return a


@pytest.mark.parametrize("shape,scales", [((64, 70), 3), ((24, 45, 46), 2)])
def test_ms_ssim_against_scipy_and_skimage(shape, scales):
    x, y = _pair(shape, seed=len(shape))
    value, terms = ms_ssim(x, y, data_range=2.0, return_terms=True)
    assert terms["scales"] == scales
    w = np.array(MS_SSIM_WEIGHTS[:scales]) / sum(MS_SSIM_WEIGHTS[:scales])
    assert np.allclose(terms["weights"], w)
    a, b, expected = x, y, 1.0
    for j in range(scales):
        s_ref, cs_ref = _reference_terms(a, b, 2.0)
        sk = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=2)
        assert terms["ssim"][j] == pytest.approx(sk, abs=1e-9)  # per scale, against skimage
        assert terms["ssim"][j] == pytest.approx(s_ref, abs=1e-9)
        assert terms["cs"][j] == pytest.approx(cs_ref, abs=1e-9)
        expected *= (cs_ref if j < scales - 1 else s_ref) ** w[j]
        a, b = _halve(a), _halve(b)
    assert value == pytest.approx(expected, rel=1e-9)
    assert ms_ssim(x, x, data_range=2.0) == pytest.approx(1.0)
    # one scale is plain SSIM; data_range matters
    assert ms_ssim(x, y, data_range=2.0, scales=1) == pytest.approx(ssim(x, y, data_range=2.0))
    assert ms_ssim(x, y, data_range=255.0) != pytest.approx(value)


def test_ms_ssim_errors():
    with pytest.raises(DataError, match="do not fit"):
        ms_ssim(np.zeros((24, 24)), np.zeros((24, 24)), data_range=2.0, scales=3)
    with pytest.raises(DataError, match=">= 11"):
        ms_ssim(np.zeros((8, 30)), np.zeros((8, 30)), data_range=2.0)


# ------------------------------------------------------------------ Fréchet distance
def test_frechet_closed_forms():
    # 1-D: (m1 - m2)² + (s1 - s2)²
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1)
    assert frechet_distance(1.0, 4.0, 3.0, 9.0) == pytest.approx(5.0)
    # diagonal (and singular) covariances: ‖Δμ‖² + Σ (√a − √b)²
    a, b = np.array([1.0, 4.0, 0.0, 2.0]), np.array([9.0, 1.0, 4.0, 0.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    closed = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(closed)
    # commuting covariances (same eigenvectors) have the same closed form
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(closed, abs=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_against_scipy_sqrtm_symmetric_nonnegative():
    rng = np.random.default_rng(1)
    d = 6
    m1, m2 = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(d), m2 @ m2.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    fd = frechet_distance(mu1, s1, mu2, s2)
    assert fd == pytest.approx(ref, rel=1e-8)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(fd, rel=1e-10)
    for seed in range(5):  # rank-deficient covariances (fewer samples than dimensions)
        r = np.random.default_rng(seed)
        fa, fb = r.normal(size=(4, 10)), r.normal(size=(5, 10)) * 0.01
        assert frechet_distance_from_features(fa, fb) >= 0
    with pytest.raises(DataError, match="shapes"):
        frechet_distance(mu1, s1, mu2[:3], s2)


def test_frechet_from_features_uses_each_sets_own_statistics():
    rng = np.random.default_rng(2)
    f1 = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5))
    mu, cov = feature_statistics(f1)
    assert np.allclose(mu, f1.mean(0)) and np.allclose(cov, np.cov(f1.T, ddof=1))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    # same covariance, shifted mean → exactly ‖Δμ‖² (the reference code's "real mean for
    # both sets" gives 0 here)
    assert frechet_distance_from_features(f1, f1 + shift) == pytest.approx((shift**2).sum(), rel=1e-7)
    # scaled features: covariance k²Σ → (k − 1)² tr Σ
    assert frechet_distance_from_features(f1, 2 * f1 - f1.mean(0)) == pytest.approx(np.trace(cov), rel=1e-7)
    got = frechet_distance_from_features(torch.tensor(f1), torch.tensor(f1 + shift))
    assert got == pytest.approx((shift**2).sum(), rel=1e-7)
    with pytest.raises(DataError, match="N >= 2"):
        frechet_distance_from_features(f1[:1], f1)


@pytest.mark.parametrize("n1,n2,d", [(7, 9, 30), (50, 40, 3), (30, 40, 200)])
def test_frechet_sample_space_equals_covariance_route(n1, n2, d):
    """Both exact routes agree; ``auto`` takes the fast sample-space one for few samples."""
    rng = np.random.default_rng(n1)
    f1, f2 = rng.normal(size=(n1, d)), rng.normal(0.3, 2.0, size=(n2, d))
    got = frechet_distance_from_features(f1, f2, method="samples")
    assert got == pytest.approx(frechet_distance_from_features(f1, f2, method="covariance"), rel=1e-9)
    assert got == pytest.approx(frechet_distance_from_features(f1, f2), rel=1e-12)


# ------------------------------------------------------------------ MMD
def test_mmd_hand_computed_and_median_heuristic():
    x, y = np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]])
    e = math.exp
    expected = e(-0.5) + e(-2.0) - 2 * (1 + e(-2.0) + 2 * e(-0.5)) / 4
    assert mmd(x, y, bandwidth=1.0) == pytest.approx(expected)
    pooled = np.array([0.0, 1.0, 0.0, 2.0])
    dists = [abs(a - b) for i, a in enumerate(pooled) for b in pooled[i + 1:]]
    assert median_heuristic(x, y) == pytest.approx(np.median(dists))
    assert mmd(x, y) == pytest.approx(mmd(x, y, bandwidth=float(np.median(dists))))


def test_mmd_gaussian_closed_form_and_same_distribution():
    rng = np.random.default_rng(3)
    n, s, delta, sigma = 1500, 1.0, 1.0, 1.0
    x, y, z = rng.normal(0, s, n), rng.normal(delta, s, n), rng.normal(0, s, n)
    v = sigma**2 + 2 * s**2
    closed = 2 * sigma / math.sqrt(v) * (1 - math.exp(-(delta**2) / (2 * v)))
    assert mmd(x, y, bandwidth=sigma) == pytest.approx(closed, abs=0.02)
    assert abs(mmd(x, z, bandwidth=sigma)) < 0.01
    assert abs(mmd(x[:500], z[:500])) < 0.01  # median-heuristic bandwidth
    with pytest.raises(DataError, match="at least 2"):
        mmd(x[:1], y)


# ------------------------------------------------------------------ Dice
def test_dice_hand_computed_and_absent_class():
    pred = np.array([[0, 1, 1, 2], [2, 2, 0, 0]])
    target = np.array([[0, 1, 2, 2], [2, 0, 0, 0]])
    d = dice_per_class(pred, target, num_classes=4)
    # class 1: |P|=2, |T|=1, |P∩T|=1 → 2/3; class 2: |P|=3, |T|=3, |P∩T|=2 → 2/3; class 3 absent
    assert d[1] == pytest.approx(2 / 3) and d[2] == pytest.approx(2 / 3)
    assert math.isnan(d[3]) and 0 not in d
    assert mean_dice(d) == pytest.approx(2 / 3)  # NaN left out
    assert math.isnan(mean_dice({1: math.nan}))
    # present in only one of them → 0
    assert dice_per_class(np.array([0, 1]), np.array([0, 0]), 2)[1] == 0.0


def test_dice_against_scipy():
    rng = np.random.default_rng(4)
    target = rng.integers(0, 5, (6, 7, 8))
    pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 5, target.shape))
    d = dice_per_class(torch.tensor(pred), target, 5)
    for c in range(1, 5):
        assert d[c] == pytest.approx(1 - scipy.spatial.distance.dice((pred == c).ravel(), (target == c).ravel()))
    with pytest.raises(DataError, match="integer"):
        dice_per_class(pred.astype(float), target, 5)
    with pytest.raises(DataError, match=r"\[0, 3\]"):
        dice_per_class(pred, target, 4)


# ------------------------------------------------------------------ feature metrics and weights
def test_available_feature_metrics(tmp_path):
    status = available_feature_metrics({})
    assert status["segnet_fd"] == "available"
    assert status["fid_2d"].startswith("skipped (no weights") and "inception" in status["fid_2d"]
    assert status["lpips"] == "skipped (no weights: vgg16, lpips)"
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    assert available_feature_metrics({"inception": f, "vgg16": f})["fid_2d"] == "available"
    assert available_feature_metrics({"vgg16": f})["lpips"] == "skipped (no weights: lpips)"
    with pytest.raises(DataError, match="missing.pth"):
        available_feature_metrics({"medicalnet": tmp_path / "missing.pth"})
    with pytest.raises(DataError, match="unknown"):
        available_feature_metrics({"incepton": f})


def test_volume_slices_orientations():
    v = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    assert volume_slices(v, "axial").shape == (2, 1, 3, 4)
    assert volume_slices(v, "coronal").shape == (3, 1, 2, 4)
    assert volume_slices(v, "sagittal", step=2).shape == (2, 1, 2, 3)
    assert torch.equal(volume_slices(v, "coronal")[1, 0], v[0, :, 1, :])


def _randomise_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(1 + 0.1 * torch.rand(m.running_var.shape, generator=g))
    return model


def test_inception_loads_pytorch_fid_format(tmp_path):
    from medlsdm.models.feature_nets.inception import InceptionV3Features, load_inception

    torch.manual_seed(0)
    ref = _randomise_bn(InceptionV3Features()).eval()
    state = ref.state_dict()
    # names and shapes of pytorch-fid's FID Inception (torchvision Inception3, 1008 classes,
    # no aux classifier, patched FIDInceptionA/C/E)
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_6b.branch7x7_2.conv.weight"].shape == (128, 128, 1, 7)
    assert state["Mixed_7c.branch3x3dbl_1.conv.weight"].shape == (448, 2048, 1, 1)
    assert state["Mixed_7b.branch_pool.bn.running_var"].shape == (192,)
    assert state["fc.weight"].shape == (1008, 2048)
    assert not any(k.startswith("AuxLogits") for k in state)
    # an old-PyTorch file has no BatchNorm counters: it still loads
    path = tmp_path / "pt_inception-2015-12-05-test.pth"
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)
    model = load_inception(path)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    g = torch.Generator().manual_seed(1)
    f = model(torch.rand(1, 3, 80, 96, generator=g))  # resized to 299 × 299 like pytorch-fid
    assert f.shape == (1, 2048) and torch.isfinite(f).all()
    model.resize_to = ref.resize_to = 75  # the smallest input InceptionV3 takes: fast checks
    x = torch.rand(3, 3, 40, 50, generator=g)
    with torch.no_grad():
        f = model(x)
        assert torch.equal(f, model(x))  # one model, the same input: exact
        torch.testing.assert_close(f, ref(x), atol=1e-5, rtol=1e-5)  # two instances, same weights: rounding only

    partial = dict(list(state.items())[:40])  # strict: a partial state_dict is refused
    torch.save(partial, tmp_path / "bad.pth")
    with pytest.raises(MedLSDMError, match="bad.pth.*pytorch-fid"):
        load_inception(tmp_path / "bad.pth")
    with pytest.raises(DataError, match="not found"):
        load_inception(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="junk.pth"):
        load_inception(tmp_path / "junk.pth")

    # the 2-D FID pipeline (small resize for speed; real use keeps 299)
    model.resize_to = 75
    rng = np.random.default_rng(0)
    real = [rng.uniform(-1, 1, (1, 4, 8, 8)).astype(np.float32) for _ in range(2)]
    fake = [np.clip(v + 0.5, -1, 1) for v in real]
    res = fid_2d(real, fake, model, slice_step=2)
    assert set(res) == {"axial", "coronal", "sagittal"} and all(v >= 0 and math.isfinite(v) for v in res.values())
    same = fid_2d(real, real, model, orientations=("axial",), slice_step=2)["axial"]
    assert same == pytest.approx(0.0, abs=1e-6) and res["axial"] > same


def test_medicalnet_loads_released_format(tmp_path):
    from medlsdm.models.feature_nets.medicalnet import MedicalNetResNet, load_medicalnet

    torch.manual_seed(0)
    ref = _randomise_bn(MedicalNetResNet(10, "B")).eval()
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}
    assert "module.layer2.0.downsample.0.weight" in state and state["module.conv1.weight"].shape == (64, 1, 7, 7, 7)
    state["module.conv_seg.0.weight"] = torch.zeros(512, 32, 2, 2, 2)  # segmentation head: ignored
    torch.save({"state_dict": state}, tmp_path / "resnet_10_23dataset.pth")
    model = load_medicalnet(tmp_path / "resnet_10_23dataset.pth")
    assert (model.depth, model.shortcut) == (10, "B")
    x = torch.rand(2, 1, 8, 16, 16, generator=torch.Generator().manual_seed(1))
    f = model(x)
    assert f.shape == (2, 512) and torch.equal(f, model(x))  # one model, the same input: exact
    torch.testing.assert_close(f, ref(x), atol=1e-5, rtol=1e-5)  # two instances, same weights: rounding only
    vols = [x[i].numpy() for i in range(2)]
    fd = fid_3d(vols + vols, [v * 0.5 for v in vols] * 2, model)
    assert fd >= 0 and math.isfinite(fd)
    assert fid_3d(vols, vols, model) == pytest.approx(0.0, abs=1e-6)

    del state["module.layer3.0.conv2.weight"]
    torch.save({"state_dict": state}, tmp_path / "broken.pth")
    with pytest.raises(DataError, match="broken.pth"):
        load_medicalnet(tmp_path / "broken.pth")
    torch.save({"state_dict": {"module.fc.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
    with pytest.raises(DataError, match="not a MedicalNet"):
        load_medicalnet(tmp_path / "other.pth")


def test_medicalnet_resnet18_shortcut_a(tmp_path):
    from medlsdm.models.feature_nets.medicalnet import MedicalNetResNet, load_medicalnet

    torch.manual_seed(0)
    ref = MedicalNetResNet(18, "A").eval()
    assert not any("downsample" in k for k in ref.state_dict())
    torch.save(ref.state_dict(), tmp_path / "r18.pth")  # a bare state_dict works too
    model = load_medicalnet(tmp_path / "r18.pth")
    assert (model.depth, model.shortcut) == (18, "A")
    x = torch.rand(1, 1, 8, 16, 16)
    with torch.no_grad():  # two instances, same weights: rounding only
        torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=1e-5)


def test_lpips_loads_lpips_format(tmp_path):
    from medlsdm.models.feature_nets.lpips import LPIPS, load_lpips

    full = LPIPS(width=1.0).state_dict()
    assert [tuple(full[f"lin{i}.model.1.weight"].shape) for i in range(5)] == [
        (1, 64, 1, 1), (1, 128, 1, 1), (1, 256, 1, 1), (1, 512, 1, 1), (1, 512, 1, 1)]
    torch.manual_seed(0)
    ref = LPIPS(width=0.25).eval()
    for i in range(5):
        getattr(ref, f"lin{i}").model[1].weight.data.abs_()
    torch.save({f"features.{k}": v for k, v in ref.net.state_dict().items()}, tmp_path / "vgg16.pth")
    torch.save({k: v for k, v in ref.state_dict().items() if k.startswith("lin")}, tmp_path / "vgg.pth")
    model = load_lpips(tmp_path / "vgg16.pth", tmp_path / "vgg.pth")
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, 1, 32, 32, generator=g) * 2 - 1, torch.rand(3, 1, 32, 32, generator=g) * 2 - 1
    d = model(x, y)
    assert d.shape == (3,) and (d > 0).all()
    torch.testing.assert_close(d, ref(x, y), atol=1e-6, rtol=1e-5)  # two instances, same weights: rounding only
    torch.testing.assert_close(model(x, x), torch.zeros(3), atol=1e-7, rtol=0)  # distance to itself
    torch.testing.assert_close(model(y, x), d, atol=1e-7, rtol=1e-6)  # symmetric
    real = [x[:, 0].numpy()[None]]  # a (1, 3, 32, 32) "volume"
    res = lpips_slices(real, [y[:, 0].numpy()[None]], model, orientations=("axial",))
    assert res["axial"] == pytest.approx(float(d.mean()), rel=1e-5)
    assert lpips_slices(real, real, model, orientations=("axial",))["axial"] == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(DataError, match="at least 16"):
        lpips_slices(real, real, model, orientations=("coronal",))  # 3 × 32 slices

    torch.save({"lin0.model.1.weight": torch.zeros(1, 7, 1, 1)}, tmp_path / "wrong.pth")
    with pytest.raises(DataError, match="wrong.pth"):
        load_lpips(tmp_path / "vgg16.pth", tmp_path / "wrong.pth")
    with pytest.raises(DataError, match="not found"):
        load_lpips(tmp_path / "nope.pth", tmp_path / "vgg.pth")


def test_segnet_feature_distance():
    from medlsdm.models.segnet import SegNet

    torch.manual_seed(0)
    model = SegNet(spatial_dims=3, num_classes=3, channels=(8, 16))
    rng = np.random.default_rng(7)
    real = [rng.uniform(-1, 1, (1, 6, 10, 8)).astype(np.float32) for _ in range(4)]  # padded to even
    fake = [np.clip(v * 0.2 + 0.5, -1, 1) for v in real]
    assert segnet_feature_distance(model, real, real) == pytest.approx(0.0, abs=1e-9)
    assert segnet_feature_distance(model, real, fake) > 0


# ------------------------------------------------------------------ paired metrics, batched features, reconstruction
def test_paired_metrics_closed_form_and_skimage():
    """A constant offset c per pair: RMSE = c, PSNR = 20 log10(2 / c), NMSE = c² N / ‖real‖²;
    SSIM against scikit-image; the means are over pairs."""
    real = [_pair((16, 16), seed=s)[0] for s in range(3)]
    offsets = [0.05, 0.1, 0.2]
    fake = [r + c for r, c in zip(real, offsets)]
    means, per_pair = paired_metrics(real, fake)
    assert len(per_pair) == 3 and set(means) == {"ssim", "psnr", "rmse", "nmse"}
    for r, c, m in zip(real, offsets, per_pair):
        np.testing.assert_allclose(m["rmse"], c, rtol=1e-9)
        np.testing.assert_allclose(m["psnr"], 20 * math.log10(2 / c), rtol=1e-9)
        np.testing.assert_allclose(m["nmse"], c**2 * r.size / np.sum(r**2), rtol=1e-9)
    np.testing.assert_allclose(means["rmse"], np.mean(offsets), rtol=1e-9)
    ref = [structural_similarity(f, r, data_range=2.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
           for r, f in zip(real, fake)]
    np.testing.assert_allclose(means["ssim"], np.mean(ref), rtol=1e-6)
    stacked, _ = paired_metrics(np.stack(real)[:, None], np.stack(real)[:, None], metrics=("ssim", "nmse"))  # (N, 1, H, W)
    assert stacked == {"ssim": pytest.approx(1.0, abs=1e-12), "nmse": 0.0}
    with pytest.raises(DataError, match="pairs"):
        paired_metrics(real, fake[:2])
    with pytest.raises(DataError, match="unknown metric"):
        paired_metrics(real, fake, metrics=("mae",))


@pytest.mark.parametrize("form", ["array", "tensor", "list"])
@pytest.mark.parametrize("batch_size", [1, 2, 5, 8])
def test_batched_features_any_batch_size(form, batch_size):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(5, 2, 4, 6)).astype(np.float32)
    ref = images.reshape(5, 2, -1).mean(-1)  # fn: the mean of each channel
    given = {"array": images, "tensor": torch.tensor(images), "list": list(images)}[form]
    got = batched_features(lambda x: x.flatten(2).mean(-1), given, batch_size=batch_size, device="cpu")
    assert got.dtype == np.float64 and got.shape == (5, 2)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)


def test_batched_features_volumes_of_different_shapes_one_at_a_time():
    volumes = [np.full((1, 2, 3, 4), 1.0, np.float32), np.full((1, 4, 4, 4), 3.0, np.float32)]
    got = batched_features(lambda x: x.flatten(1).mean(1, keepdim=True), volumes, batch_size=1, device="cpu")
    np.testing.assert_allclose(got, [[1.0], [3.0]], rtol=0)
    with pytest.raises(RuntimeError):  # two shapes cannot form one batch
        batched_features(lambda x: x.flatten(1).mean(1, keepdim=True), volumes, batch_size=2, device="cpu")


def test_segnet_features_of_2d_slices_batched_and_padded():
    """Features of a batch of 2-D slices equal those of each slice alone, edge-padded by hand
    (10 is not divisible by the network's factor 4); the network's mode is restored."""
    from medlsdm.models.segnet import SegNet

    torch.manual_seed(0)
    model = SegNet(spatial_dims=2, num_classes=3, channels=(4, 8, 8), norm_num_groups=4).train()
    slices = np.random.default_rng(1).uniform(-1, 1, (5, 1, 12, 10)).astype(np.float32)
    got = segnet_features(model, slices, batch_size=3)
    assert model.training and got.shape == (5, 8)
    with torch.no_grad():
        model.eval()
        ref = np.concatenate([model.features(torch.nn.functional.pad(torch.tensor(s)[None], (0, 2, 0, 0), mode="replicate"))
                              .double().numpy() for s in slices])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert segnet_feature_distance(model, slices, slices, batch_size=2) == pytest.approx(0.0, abs=1e-9)
    assert segnet_feature_distance(model, slices, np.clip(slices * 0.2 + 0.5, -1, 1), batch_size=2) > 0


class _ChannelStats(torch.nn.Module):
    """Stand-in for InceptionV3: per-channel mean, min and max of its input."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.cat([x.mean((2, 3)), x.amin((2, 3)), x.amax((2, 3))], 1)


def test_inception_features_see_rgb_in_unit_range():
    slices = np.random.default_rng(2).uniform(-1.5, 1.5, (7, 1, 6, 5)).astype(np.float32)  # beyond [-1, 1]: clamped
    got = inception_features(_ChannelStats(), slices, batch_size=3)
    unit = (np.clip(slices[:, 0], -1, 1) + 1) / 2
    for c in range(3):  # the grey slice repeated to three channels
        np.testing.assert_allclose(got[:, c], unit.mean((1, 2)), rtol=1e-6)
        np.testing.assert_allclose(got[:, 3 + c], unit.min((1, 2)), rtol=0, atol=1e-7)
        np.testing.assert_allclose(got[:, 6 + c], unit.max((1, 2)), rtol=0, atol=1e-7)
    volume = slices[:, 0][None]  # the slices as the axial slices of one volume
    np.testing.assert_allclose(inception_slice_features(_ChannelStats(), [volume], "axial"), got, rtol=1e-6)
    assert not np.allclose(inception_slice_features(_ChannelStats(), [volume], "coronal")[:, 0], got[:6, 0])


def test_reconstruct_2d_slices_against_the_model_by_hand():
    """Batched reconstruction equals encode → nearest codes → decode of each slice, padded
    (14 → 16) and cropped back; the codebook and the model's mode are left alone."""
    from medlsdm.models import VQGAN

    torch.manual_seed(0)
    model = VQGAN(2, channels=(8, 8, 8), num_embeddings=16, embedding_dim=4, norm_num_groups=4).train()
    codebook = model.quantizer.codebook.clone()
    images = np.random.default_rng(3).uniform(-1, 1, (5, 1, 12, 14)).astype(np.float32)
    out = reconstruct(model, images, batch_size=2)
    assert model.training and torch.equal(model.quantizer.codebook, codebook)
    assert out.images.shape == images.shape and out.images.dtype == np.float32 and out.indices.shape == (5, 3, 4)
    model.eval()
    with torch.no_grad():
        x = torch.nn.functional.pad(torch.tensor(images), (0, 2, 0, 0), mode="replicate")
        zq, idx, _ = model.quantize(model.encode(x).latents, update=False)
        ref = model.decode(zq, force_not_quantize=True).sample[..., :14].clamp(-1, 1).numpy()
    np.testing.assert_allclose(out.images, ref, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out.indices, idx.numpy())
    assert np.abs(out.images - images).max() > 0.1  # an untrained model: not the identity


def test_reconstruct_spade_needs_and_uses_the_label_maps():
    from medlsdm.models import VQGAN

    torch.manual_seed(0)
    model = VQGAN(3, channels=(8, 8), num_embeddings=8, embedding_dim=4, norm_num_groups=4, decoder_type="spade", num_classes=3)
    rng = np.random.default_rng(4)
    images = [rng.uniform(-1, 1, (1, 4, 6, 5)).astype(np.float32)]  # 5: padded to 6
    labels = [rng.integers(0, 3, (4, 6, 5))]
    a = reconstruct(model, images, labels).images
    b = reconstruct(model, images, [(labels[0] + 1) % 3]).images
    assert a.shape == (1, 1, 4, 6, 5) and np.abs(a - b).max() > 1e-4  # the decoder reads the labels
    np.testing.assert_allclose(reconstruct(model, images, labels).images, a, rtol=0, atol=0)
    with pytest.raises(MedLSDMError, match="SPADE"):
        reconstruct(model, images)
