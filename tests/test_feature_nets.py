"""medlsdm.models.feature_nets: each network loads its published weight format (weights the test writes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medlsdm.errors import DataError, MedLSDMError
from medlsdm.evaluation.features import fid_2d, fid_3d, lpips_slices

pytestmark = pytest.mark.usefixtures("one_thread")


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
        (1, 64, 1, 1),
        (1, 128, 1, 1),
        (1, 256, 1, 1),
        (1, 512, 1, 1),
        (1, 512, 1, 1),
    ]
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
