"""The 2-D cardiac LDM helpers: Canny edges, slicing, the HDF5 slice store, M&Ms, conditioning modes."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from skimage.feature import canny

from medlsdm.cardiac.conditioning import MODES, check_modes, condition_inputs, make_condition, mode_slug
from medlsdm.cardiac.data import EDGE_DEFAULTS, CardiacSlice, canny_edges, prepare_cardiac, slice_case
from medlsdm.cardiac.evaluation import ablation_table, evaluate_samples
from medlsdm.cardiac.store import CLASS_NAMES, SliceStore
from medlsdm.cardiac.training import load_mode_pipeline, mode_dir, synthesize, train_mode, train_vqvae
from medlsdm.data.io import dhw_to_world
from medlsdm.data.prepare import load_manifest
from medlsdm.errors import ConfigError, DataError
from medlsdm.pipelines.loading import load_pipeline_dir

pytestmark = pytest.mark.usefixtures("one_thread")


def disc_image(size=48, seed=0):
    """A bright disc in a dark ring on a noisy background, in [-1, 1]."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    image = np.where(r < size / 5, 0.8, np.where(r < size / 3, -0.4, 0.1))
    return (image + 0.05 * np.random.default_rng(seed).standard_normal(image.shape)).astype(np.float32)


# ------------------------------------------------------------------------------ edges
@pytest.mark.parametrize("sigma, low, high", [(1.0, 0.1, 0.2), (1.5, 0.15, 0.3), (2.0, None, None)])
def test_canny_edges_equals_skimage(sigma, low, high):
    image = disc_image()
    ours = canny_edges(image[None], sigma, low, high)  # (1, H, W) is accepted too
    ref = canny(image.astype(np.float64), sigma=sigma, low_threshold=low, high_threshold=high)
    assert ours.dtype == bool and np.array_equal(ours, ref)
    q = canny_edges(image, sigma, 0.7, 0.9, use_quantiles=True)
    assert np.array_equal(
        q, canny(image.astype(np.float64), sigma=sigma, low_threshold=0.7, high_threshold=0.9, use_quantiles=True)
    )


def test_canny_edges_smoothing_removes_noise_edges_and_bad_args():
    image = disc_image()
    assert canny_edges(image, 0.5, 0.1, 0.2).sum() > canny_edges(image, 2.0, 0.1, 0.2).sum() > 0
    with pytest.raises(ConfigError, match="sigma"):
        canny_edges(image, 0.0)
    with pytest.raises(ConfigError, match="low threshold"):
        canny_edges(image, 1.0, 0.5, 0.2)
    with pytest.raises(DataError, match="2-D"):
        canny_edges(np.zeros((2, 8, 8)))


# ------------------------------------------------------------------------------ slicing
def test_slice_case_geometry_and_affine():
    # a volume whose slice axis (10 mm) is the array's last axis: it must come first
    rng = np.random.default_rng(0)
    shape = (40, 36, 5)
    image = rng.normal(100, 10, shape).astype(np.float32)
    label = np.zeros(shape, np.int64)
    label[20:26, 10:18, 1:4] = 2
    affine = np.diag([10.0, 1.5, 1.5, 1.0])  # columns: x = W (10 mm), y = H, z = D
    affine[:3, 3] = [5.0, -3.0, 7.0]
    out = slice_case(image, label, affine, size=16, fov_mm=48.0)
    assert [d for d, _ in out] == [1, 2, 3]  # only slices with foreground
    d, s = out[1]
    assert s.image.shape == (1, 16, 16) and s.label.shape == (16, 16) and s.label.dtype == np.int64
    assert -1 <= s.image.min() and s.image.max() <= 1
    fg = np.argwhere(s.label == 2).mean(0)
    assert np.allclose(fg, 7.5, atol=1.0)  # centred on the foreground
    # the affine follows: pixel (h, w) of the slice is where the original voxel was
    h, w = np.argwhere(s.label == 2)[0]
    world = dhw_to_world(s.affine, (0, h, w))
    orig = np.round(np.linalg.solve(affine[:3, :3], world - affine[:3, 3])[::-1], 3)  # (d, h, w) of the input
    assert label[int(round(orig[0])), int(round(orig[1])), int(round(orig[2]))] == 2
    assert np.isclose(orig[2], d)  # the slice index along the original slice axis


# ------------------------------------------------------------------------------ HDF5 store
def write_store(path, n=5, size=16):
    rng = np.random.default_rng(1)
    items = []
    with SliceStore(path, "w", size=size, attrs={"edges": {"sigma": 1.5}, "size": size}) as store:
        assert not path.exists()  # written under a temporary name until closed
        for i in range(n):
            item = CardiacSlice(
                rng.uniform(-1, 1, (1, size, size)).astype(np.float32),
                rng.integers(0, 4, (size, size)),
                np.eye(4) * (i + 1),
            )
            edges = rng.random((size, size)) > 0.7
            store.add(f"s{i}", f"case{i // 2}", f"p{i // 2}", i, item, edges)
            items.append((item, edges))
    return items


def test_slice_store_round_trip_lazy(tmp_path):
    path = tmp_path / "slices.h5"
    items = write_store(path)
    store = SliceStore(path)
    assert len(store) == 5 and store.ids() == [f"s{i}" for i in range(5)] and "s3" in store and "x" not in store
    image, label, affine = store["s3"]  # unpacks like a CaseStore item
    assert np.array_equal(image, items[3][0].image) and np.array_equal(label, items[3][0].label)
    assert label.dtype == np.int64 and np.array_equal(affine, items[3][0].affine)
    assert np.array_equal(store[-2].image, image)
    assert np.array_equal(store.edges("s3"), items[3][1][None].astype(np.float32))
    assert store.column("patient_ids") == ["p0", "p0", "p1", "p1", "p2"] and store.column("slice_index") == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert store.attrs["edges"] == {"sigma": 1.5} and store.attrs["size"] == 16
    f = store._h5()
    for name in ("images", "labels", "edges"):  # one chunk per slice: a read touches one slice only
        assert f[name].chunks == (1, *f[name].shape[1:])
    stacked = store.stack(["s0", "s4"])
    assert stacked["images"].shape == (2, 1, 16, 16) and stacked["edges"].shape == (2, 1, 16, 16)
    with pytest.raises(KeyError):
        store["nope"]
    with pytest.raises(IndexError):
        store[5]
    import pickle

    assert np.array_equal(pickle.loads(pickle.dumps(store))["s1"].label, items[1][0].label)  # reopens lazily


def test_slice_store_atomic_and_checks(tmp_path):
    path = tmp_path / "slices.h5"
    write_store(path, n=2)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        with SliceStore(path, "w", size=16) as store:
            store.add(
                "a",
                "c",
                "p",
                0,
                CardiacSlice(np.zeros((1, 16, 16), np.float32), np.zeros((16, 16), int), np.eye(4)),
                np.zeros((16, 16)),
            )
            raise RuntimeError("boom")
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["slices.h5"]
    with SliceStore(tmp_path / "other.h5", "w", size=16) as store:
        with pytest.raises(DataError, match="shape"):
            store.add(
                "a",
                "c",
                "p",
                0,
                CardiacSlice(np.zeros((1, 8, 8), np.float32), np.zeros((8, 8), int), np.eye(4)),
                np.zeros((8, 8)),
            )
        with pytest.raises(DataError, match="class indices"):
            store.add(
                "a",
                "c",
                "p",
                0,
                CardiacSlice(np.zeros((1, 16, 16), np.float32), np.full((16, 16), 4), np.eye(4)),
                np.zeros((16, 16)),
            )
    with pytest.raises(DataError, match="not found"):
        SliceStore(tmp_path / "missing.h5")


# ------------------------------------------------------------------------------ datasets
def write_mnms(root, codes=("A0", "B1", "C2", "D3")):
    """Tiny M&Ms-layout files: 4-D short-axis cine + ground truth labelled at ED (t=0) and ES (t=2)."""
    affine = np.diag([1.5, 1.5, 10.0, 1.0])
    yy, xx = np.mgrid[:40, :40]
    for k, code in enumerate(codes):
        folder = root / "Training" / "Labeled" / code
        folder.mkdir(parents=True)
        rng = np.random.default_rng(k)
        image = rng.normal(200, 20, (40, 40, 4, 3)).astype(np.float32)
        gt = np.zeros((40, 40, 4, 3), np.uint8)
        for t, radius in ((0, 9), (2, 6)):  # ED: the larger LV
            r = np.hypot(xx - 20 - k, yy - 18)
            for z in range(1, 4):  # slice 0 (base) has no label
                gt[..., z, t] = np.where(r < radius, 1, np.where(r < radius + 3, 2, 0)).T
                gt[24:30, 10:20, z, t] = 3
                image[..., z, t] += 400 * (gt[..., z, t] == 1)
        nib.save(nib.Nifti1Image(image, affine), folder / f"{code}_sa.nii.gz")
        nib.save(nib.Nifti1Image(gt, affine), folder / f"{code}_sa_gt.nii.gz")


def test_prepare_mnms_layout(tmp_path):
    write_mnms(tmp_path / "mnms")
    summary = prepare_cardiac(
        tmp_path / "out", dataset="mnms", data_root=tmp_path / "mnms", size=16, fov_mm=48.0, progress=False
    )
    assert summary["n_subjects"] == 4 and summary["n_cases"] == 8 and summary["n_slices"] == 8 * 3
    store = SliceStore(tmp_path / "out" / "data" / "slices.h5")
    assert sorted(set(store.column("case_ids"))) == sorted(
        f"{c}_{p}" for c in ("A0", "B1", "C2", "D3") for p in ("ED", "ES")
    )
    assert set(store.column("slice_index")) == {1, 2, 3}
    split = json.loads((tmp_path / "out" / "data" / "split.json").read_text())
    patient = dict(zip(store.ids(), store.column("patient_ids")))
    for name, ids in split.items():  # ED and ES frames (and all slices) of a subject stay together
        others = set(sum((v for k, v in split.items() if k != name), []))
        assert not {patient[i] for i in ids} & {patient[i] for i in others}
    lv = {c: 0 for c in ("A0_ED", "A0_ES")}
    for sid, cid in zip(store.ids(), store.column("case_ids")):
        if cid in lv:
            lv[cid] += int((store[sid].label == 1).sum())
    assert lv["A0_ED"] > lv["A0_ES"]
    manifest = load_manifest(tmp_path / "out" / "data")  # the 2-D manifest the trainers read
    assert manifest.classes == list(CLASS_NAMES) and manifest.spacing == [3.0, 3.0] and manifest.block_shape is None
    assert manifest.extra["slices"] == "slices.h5" and "n_slices" in manifest.cases[0].extra
    edges = store.edges(0)[0].astype(bool)
    assert np.array_equal(edges, canny_edges(store[0].image, **EDGE_DEFAULTS))  # computed once, stored
    with pytest.raises(ConfigError, match="data_root"):
        prepare_cardiac(tmp_path / "x", dataset="mnms")


def write_mnms2(root, ids=("001", "002", "003")):
    """Tiny M&Ms-2 files: per subject and phase a 3-D short-axis stack (4 slices) and a one-slice long-axis image."""
    root.mkdir(parents=True)
    (root / "dataset_information.csv").write_text("SUBJECT_CODE,DISEASE\n" + "".join(f"{int(i)},NOR\n" for i in ids))
    yy, xx = np.mgrid[:40, :40]
    for k, sid in enumerate(ids):
        folder = root / "dataset" / sid
        folder.mkdir(parents=True)
        for view, depth in (("SA", 4), ("LA", 1)):
            for phase, radius in (("ED", 9), ("ES", 6)):
                r = np.hypot(xx - 20 - k, yy - 18)
                gt = np.repeat(np.where(r < radius, 1, np.where(r < radius + 3, 2, 0)).T[..., None], depth, 2).astype(
                    np.uint8
                )
                image = np.random.default_rng(k).normal(200, 20, gt.shape).astype(np.float32) + 400 * (gt == 1)
                stem = folder / f"{sid}_{view}_{phase}"
                nib.save(nib.Nifti1Image(image, np.diag([1.5, 1.5, 8.0, 1.0])), f"{stem}.nii.gz")
                nib.save(nib.Nifti1Image(gt, np.diag([1.5, 1.5, 8.0, 1.0])), f"{stem}_gt.nii.gz")


@pytest.mark.parametrize(
    "views, per_case", [(["SA"], {"SA": 4}), (["LA"], {"LA": 1}), (["SA", "LA"], {"SA": 4, "LA": 1})]
)
def test_prepare_mnms2_views(tmp_path, views, per_case):
    write_mnms2(tmp_path / "mnms2")
    summary = prepare_cardiac(
        tmp_path / "out",
        dataset="mnms",
        data_root=tmp_path / "mnms2",
        views=views,
        size=16,
        fov_mm=48.0,
        progress=False,
    )
    store = SliceStore(tmp_path / "out" / "data" / "slices.h5")
    view_of = [cid.split("_")[1] for cid in store.column("case_ids")]
    assert {v: view_of.count(v) for v in set(view_of)} == {
        v: 3 * 2 * n for v, n in per_case.items()
    }  # 3 subjects × ED, ES
    assert summary["views"] == views and store.attrs["views"] == views


def test_views_need_mnms(tmp_path):
    with pytest.raises(ConfigError, match="views"):
        prepare_cardiac(tmp_path, views=["SA", "LA"], n_subjects=3, size=32, progress=False)


def test_prepare_phantom(tmp_path):
    summary = prepare_cardiac(tmp_path, n_subjects=3, size=32, progress=False)
    assert summary["n_subjects"] == 3 and summary["n_train"] and summary["n_val"] and summary["n_test"]
    store = SliceStore(tmp_path / "data" / "slices.h5")
    assert store[0].image.shape == (1, 32, 32) and store.attrs["pixel_mm"] == 4.0
    assert (tmp_path / "raw" / "phantom.json").exists()


# ------------------------------------------------------------------------------ conditioning
def test_conditioning_modes():
    labels = torch.randint(0, 4, (2, 16, 16))
    edges = (torch.rand(2, 1, 16, 16) > 0.7).float()
    conds = {m: make_condition(labels, edges, m) for m in MODES}
    for cond in conds.values():
        assert cond.shape == (2, 4 + 1 + 1, 16, 16) and not cond[:, 5].any()  # one-hot, edge, null
    assert torch.equal(conds["edges"][:, 4:5], edges) and conds["edges"][:, 0].eq(1).all()  # constant label map
    assert torch.equal(conds["semantic"][:, :4].argmax(1), labels) and not conds["semantic"][:, 4].any()
    assert torch.equal(conds["edges+semantic"][:, :4], conds["semantic"][:, :4])
    assert torch.equal(conds["edges+semantic"][:, 4:5], edges)
    for a in MODES:
        for b in MODES:
            assert (a == b) == torch.equal(conds[a], conds[b])
    lab_np, edg_np = condition_inputs(labels.numpy(), edges.numpy(), "semantic")
    assert np.array_equal(lab_np, labels.numpy()) and not edg_np.any()
    with pytest.raises(ConfigError, match="mode"):
        make_condition(labels, edges, "edges-only")
    assert check_modes(("semantic", "edges")) == ["semantic", "edges"]
    for bad in (["edges", "edges"], [], ["canny"]):
        with pytest.raises(ConfigError):
            check_modes(bad)
    assert mode_slug("edges+semantic") == "edges_semantic"


def test_train_and_sample_tiny(tmp_path):
    """VQ-VAE and one mode's LDM through the shared training code, a few steps each."""
    prepare_cardiac(tmp_path, n_subjects=3, size=16, fov_mm=96.0, progress=False)
    store = SliceStore(tmp_path / "data" / "slices.h5")
    split = json.loads((tmp_path / "data" / "split.json").read_text())
    train_vqvae(
        tmp_path,
        store,
        split,
        steps=2,
        channels=(8, 8, 8),
        num_embeddings=16,
        batch_size=2,
        progress=False,
        val_cases=1,
    )
    summary = train_mode(
        tmp_path,
        store,
        split,
        "edges+semantic",
        steps=2,
        batch_size=2,
        channels=(8, 16),
        attention_levels=(False, True),
        num_heads=2,
        num_train_timesteps=20,
        progress=False,
    )
    assert np.isfinite(summary["final_loss"])
    pipe = load_mode_pipeline(tmp_path, "edges+semantic")
    assert pipe.unet.config.extra_condition_channels == 1 and pipe.unet.config.num_classes == 4
    folder = mode_dir(tmp_path, "edges+semantic")  # the mode is in the pipeline's own config, no mode.json
    assert json.loads((folder / "pipeline" / "model_index.json").read_text())["conditioning_mode"] == "edges+semantic"
    assert not (folder / "mode.json").exists()
    assert load_pipeline_dir(folder / "pipeline").config.conditioning_mode == "edges+semantic"
    data = store.stack(split["test"][:2])
    fake = synthesize(pipe, data["labels"], data["edges"], "edges+semantic", num_inference_steps=2)
    assert fake.shape == data["images"].shape and np.isfinite(fake).all()
    np.testing.assert_array_equal(synthesize(pipe, data["labels"], data["edges"], num_inference_steps=2), fake)
    assert not np.array_equal(
        synthesize(pipe, data["labels"], data["edges"], "edges+semantic", num_inference_steps=2, seed=1), fake
    )
    assert np.isfinite(
        synthesize(pipe, data["labels"], data["edges"], "semantic", num_inference_steps=2, scheduler="ddpm")
    ).all()
    with pytest.raises(ConfigError, match="scheduler"):
        synthesize(pipe, data["labels"], data["edges"], "semantic", scheduler="heun")
    res = evaluate_samples(data["images"], data["images"])
    assert res["ssim"] == pytest.approx(1.0) and res["nmse"] == 0 and res["fid"] is None
    table = ablation_table({"a": {"ssim": 0.5, "nmse": 1.0}})
    assert "| a | 0.5 | 1 | – | – |" in table


def test_a_mode_pipeline_saved_with_mode_json_still_loads(tmp_path):
    """Pipelines saved before the mode went into their config (a ``mode.json`` beside them,
    no ``conditioning_mode`` in ``model_index.json``) load with their mode; another mode's
    ``mode.json`` is refused; saving one again records the mode in its config."""
    from diffusers import DDPMScheduler

    from medlsdm.models.unet import SemanticUNet
    from medlsdm.models.vqgan import VQGAN
    from medlsdm.pipelines.pipeline_medlsdm import MedLSDMPipeline

    torch.manual_seed(0)
    vqgan = VQGAN(spatial_dims=2, channels=(8, 8, 8), embedding_dim=3, num_embeddings=16, norm_num_groups=4)
    unet = SemanticUNet(
        spatial_dims=2,
        in_channels=3,
        out_channels=3,
        num_classes=4,
        channels=(8, 16),
        attention_levels=(False, True),
        norm_num_groups=4,
        num_heads=2,
        extra_condition_channels=1,
    )
    folder = mode_dir(tmp_path, "semantic")
    MedLSDMPipeline(vqgan.eval(), unet.eval(), DDPMScheduler(num_train_timesteps=20)).save_pretrained(
        folder / "pipeline"
    )
    index = json.loads((folder / "pipeline" / "model_index.json").read_text())
    del index["conditioning_mode"]
    (folder / "pipeline" / "model_index.json").write_text(json.dumps(index))
    (folder / "mode.json").write_text(json.dumps({"mode": "semantic"}))

    pipe = load_mode_pipeline(tmp_path, "semantic")
    assert pipe.config.conditioning_mode == "semantic"
    rng = np.random.default_rng(0)
    labels, edges = rng.integers(0, 4, (2, 16, 16)), (rng.random((2, 1, 16, 16)) > 0.8).astype(np.float32)
    np.testing.assert_array_equal(
        synthesize(pipe, labels, edges, num_inference_steps=2),
        synthesize(pipe, labels, edges, "semantic", num_inference_steps=2),
    )
    pipe.save_pretrained(tmp_path / "resaved")
    assert json.loads((tmp_path / "resaved" / "model_index.json").read_text())["conditioning_mode"] == "semantic"
    with pytest.raises(ConfigError, match="conditioning mode"):
        synthesize(load_pipeline_dir(folder / "pipeline"), labels, edges, num_inference_steps=2)
    (folder / "mode.json").write_text(json.dumps({"mode": "edges"}))
    with pytest.raises(DataError, match="'edges', not 'semantic'"):
        load_mode_pipeline(tmp_path, "semantic")


def test_train_mode_is_train_diffusion_on_what_the_mode_sees(tmp_path):
    """``train_mode`` hands the mode's view of the conditions to ``train_diffusion``
    (``condition_fn``): bit for bit the model trained on a store whose label maps (``edges``)
    or edge maps (``semantic``) were hidden by hand; the two modes differ."""
    from medlsdm.training.datasets import ArrayStore
    from medlsdm.training.diffusion import train_diffusion

    prepare_cardiac(tmp_path, n_subjects=3, size=16, fov_mm=96.0, progress=False)
    store = SliceStore(tmp_path / "data" / "slices.h5")
    split = json.loads((tmp_path / "data" / "split.json").read_text())
    train_vqvae(
        tmp_path,
        store,
        split,
        steps=1,
        channels=(8, 8, 8),
        num_embeddings=16,
        batch_size=2,
        progress=False,
        val_cases=1,
    )
    params = dict(
        steps=2,
        batch_size=2,
        channels=(8, 16),
        attention_levels=(False, True),
        num_heads=2,
        num_train_timesteps=20,
        progress=False,
        sample_every=2,
        sample_steps=2,
    )
    hidden = {
        "edges": (
            ArrayStore({k: store[k]._replace(label=np.zeros_like(store[k].label)) for k in store}),
            {k: store.edges(k) for k in store},
        ),
        "semantic": (ArrayStore({k: store[k] for k in store}), {k: np.zeros_like(store.edges(k)) for k in store}),
    }
    weights = {}
    for mode, (ref_store, ref_edges) in hidden.items():
        train_mode(tmp_path, store, split, mode, **params)
        ref = tmp_path / f"ref_{mode}"
        train_diffusion(
            tmp_path,
            store=ref_store,
            split=split,
            extra_condition=ref_edges,
            out_dir=ref,
            pipeline_dir=ref / "pipeline",
            appearance_swaps=0,
            **params,
        )  # train_mode trains without swaps
        ours, theirs = (
            load_mode_pipeline(tmp_path, mode).unet.state_dict(),
            load_pipeline_dir(ref / "pipeline").unet.state_dict(),
        )
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
        a, b = np.load(mode_dir(tmp_path, mode) / "samples-0000002.npz"), np.load(ref / "samples-0000002.npz")
        np.testing.assert_array_equal(a["images"], b["images"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
        assert (a["labels"] == 0).all() == (mode == "edges")
        weights[mode] = ours
    assert not all(torch.equal(weights["edges"][k], weights["semantic"][k]) for k in weights["edges"])


def test_fid_path():
    """FID runs through the InceptionV3 code path (random weights here: only the plumbing is
    checked; the network is tested against pytorch-fid's file elsewhere)."""
    from medlsdm.models.feature_nets.inception import InceptionV3Features

    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (3, 1, 16, 16)).astype(np.float32)
    fake = np.clip(real + 0.3 * rng.standard_normal(real.shape), -1, 1).astype(np.float32)
    torch.manual_seed(0)
    res = evaluate_samples(real, fake, inception=InceptionV3Features(resize_to=75).eval())
    assert np.isfinite(res["fid"]) and res["fid"] >= 0 and res["ssim"] < 1 and res["nmse"] > 0


def test_evaluate_samples_against_references():
    """Paired metrics of a constant offset c (NMSE = c² N / ‖real‖², SSIM as scikit-image),
    FD-seg from the network's features computed by hand, Dice as ``evaluate_dice``."""
    from skimage.metrics import structural_similarity

    from medlsdm.evaluation.segmentation import evaluate_dice
    from medlsdm.metrics.distribution import frechet_distance_from_features
    from medlsdm.models.segnet import SegNet

    rng = np.random.default_rng(5)
    real = np.stack([disc_image(16, seed=s)[None] for s in range(4)])
    fake = real + np.float32(0.1)
    labels = rng.integers(0, 4, (4, 16, 16))
    torch.manual_seed(0)
    segnet = SegNet(spatial_dims=2, num_classes=4, channels=(4, 8), norm_num_groups=4).eval()
    res = evaluate_samples(real, fake, labels=labels, segnet=segnet)
    nmse_ref = [0.01 * r.size / np.sum(r.astype(np.float64) ** 2) for r in real]
    np.testing.assert_allclose(res["nmse"], np.mean(nmse_ref), rtol=1e-5)
    ssim_ref = [
        structural_similarity(
            f[0].astype(np.float64),
            r[0].astype(np.float64),
            data_range=2.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        for r, f in zip(real, fake)
    ]
    np.testing.assert_allclose(res["ssim"], np.mean(ssim_ref), rtol=1e-6)
    with torch.no_grad():
        feats = [segnet.features(torch.tensor(x)).double().numpy() for x in (real, fake)]
    np.testing.assert_allclose(res["fd_seg"], frechet_distance_from_features(*feats), rtol=1e-6, atol=1e-9)
    assert res["fd_seg"] > 0 and res["n"] == 4 and res["fid"] is None
    np.testing.assert_allclose(res["dice"], evaluate_dice(segnet, fake, labels, 4)["mean"], rtol=0)
    same = evaluate_samples(real, real, segnet=segnet)
    assert same["fd_seg"] == pytest.approx(0.0, abs=1e-9) and "dice" not in same
    with pytest.raises(DataError, match="paired"):
        evaluate_samples(real, fake[:3])


@pytest.mark.notebook
def test_rerunning_notebook_06_with_other_edges_retrains(smoke_run_copy):
    """Issue 25: notebook 06's exercise 1 (-p edge_sigma=0.8) rerun in the same run directory
    rewrites the slices; its VQ-VAE and diffusion models train afresh (on_change="retrain")
    instead of stopping at a ConfigError that no -p of notebook 06 could avoid."""
    from medlsdm.runner import run_notebooks
    from medlsdm.training.checkpoint import file_digest

    cardiac = smoke_run_copy.cardiac
    before = file_digest(cardiac / "data" / "slices.h5")
    run_notebooks("smoke", smoke_run_copy.root, only=["06"], overrides={"edge_sigma": 0.8})
    slices = file_digest(cardiac / "data" / "slices.h5")
    assert slices != before
    for folder in [cardiac / "vqgan"] + [mode_dir(cardiac, m) for m in MODES]:
        state = torch.load(sorted((folder / "checkpoints").glob("*.pt"))[-1], weights_only=True)
        assert state["fingerprint"]["inputs"]["cases"] == slices, folder
    executed = (smoke_run_copy.executed / "06_cardiac_2d_ldm.ipynb").read_text()
    assert "input cases" in executed and "on_change='retrain': training afresh" in executed
