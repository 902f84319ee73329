"""The segmentation network and its training/evaluation helpers (tiny, CPU)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from evaluation_utils import make_case

from medlsdm.errors import ConfigError, DataError
from medlsdm.evaluation.segmentation import average_over_seeds, case_scores, evaluate_dice, lesion_classes, predict
from medlsdm.models.segnet import SegNet
from medlsdm.training.segnet import _crop_and_flip, class_balance_weights, dice_ce_loss, train_segnet

pytestmark = pytest.mark.usefixtures("one_thread")


def _toy_cases(n=4, shape=(8, 12, 12), seed=0):
    """Bright ball (class 1) and dark slab (class 2) on a noisy background."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    for _ in range(n):
        c = rng.uniform(3, np.array(shape) - 3)
        label = np.zeros(shape, dtype=np.int64)
        label[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < 6] = 1
        label[:, :, : int(rng.integers(2, 4))] = 2
        image = np.choose(label, [0.0, 0.8, -0.8]) + rng.normal(0, 0.2, shape)
        images.append(image.astype(np.float32)[None])
        labels.append(label)
    return images, labels


def test_segnet_shapes_and_features(tmp_path):
    torch.manual_seed(0)
    net = SegNet(spatial_dims=3, num_classes=3, channels=(4, 8, 8), norm_num_groups=4)
    x = torch.randn(2, 1, 8, 12, 16)
    assert net(x).shape == (2, 3, 8, 12, 16)
    assert net.features(x).shape == (2, 8)
    assert net.downsample_factor == 4
    net2d = SegNet(spatial_dims=2, num_classes=4, channels=(4, 8), norm_num_groups=4)
    assert net2d(torch.randn(3, 1, 10, 6)).shape == (3, 4, 10, 6)
    with pytest.raises(DataError, match="divisible by 4"):
        net(torch.randn(1, 1, 8, 12, 14))
    with pytest.raises(DataError, match="expects"):
        net(torch.randn(1, 2, 8, 12, 16))
    with pytest.raises(ConfigError):
        SegNet(spatial_dims=1)
    net.save_pretrained(tmp_path / "segnet")
    again = SegNet.from_pretrained(tmp_path / "segnet")
    with (
        torch.no_grad()
    ):  # two instances with the same weights: float32 rounding only (CPU kernels differ in the last bits)
        torch.testing.assert_close(again(x), net.eval()(x), atol=1e-5, rtol=1e-5)


def test_dice_ce_loss():
    target = torch.tensor([[0, 1, 1, 2]])
    perfect = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float() * 20
    assert float(dice_ce_loss(perfect, target)) < 1e-6
    wrong = torch.roll(perfect, 1, dims=1)
    assert float(dice_ce_loss(wrong, target)) > 1.0
    assert float(dice_ce_loss(wrong, target, dice_weight=0)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(wrong, target))
    )


def test_crops_and_flips_keep_image_and_label_aligned():
    label = np.arange(4 * 6 * 8).reshape(4, 6, 8) % 5
    image = (label * 0.1).astype(np.float32)[None]
    seen = set()
    for i in range(8):
        x, y = _crop_and_flip(image, label, (2, 4, 4), (0, 1, 2), np.random.default_rng([0, i]))
        assert x.shape == (1, 2, 4, 4) and y.shape == (2, 4, 4)
        assert np.allclose(x[0], y * 0.1)
        seen.add(x.tobytes())
    assert len(seen) > 1


def test_class_balance_weights():
    labels = [np.array([0] * 90 + [1] * 9), np.array([2])]
    f = np.array([0.9, 0.09, 0.01])
    expected = (f + 1e-4) ** -0.5
    expected /= (expected * f).sum()
    w = class_balance_weights(labels, 3, power=0.5)
    assert np.allclose(w.numpy(), expected) and float((w.double() * torch.tensor(f)).sum()) == pytest.approx(1.0)
    assert torch.allclose(class_balance_weights(labels, 3, power=0.0), torch.ones(3))
    logits = torch.randn(1, 3, 5)
    target = torch.tensor([[0, 1, 2, 2, 0]])
    ce = torch.nn.functional.cross_entropy(logits, target, weight=w)
    assert float(dice_ce_loss(logits, target, dice_weight=0, class_weights=w)) == pytest.approx(float(ce))


def test_training_decreases_loss_and_evaluates():
    images, labels = _toy_cases()
    kw = dict(
        num_classes=3,
        steps=40,
        batch_size=2,
        lr=1e-2,
        channels=(8, 8),
        norm_num_groups=4,
        crop_shape=(8, 8, 8),
        progress=False,
    )
    fit = train_segnet(images, labels, seed=0, **kw)
    model, h = fit.model, fit.loss_history
    assert len(h) == 40 and np.mean(h[-5:]) < 0.6 * np.mean(h[:5])
    assert not model.training
    preds = predict(model, [im[:, :, :11] for im in images[:2]])  # padded to 12, cropped back
    assert preds[0].shape == (8, 11, 12) and preds[0].dtype == np.int64
    res = evaluate_dice(model, images, labels, num_classes=3, class_names=["bg", "ball", "slab"])
    assert set(res["per_class"]) == {"ball", "slab"} and res["n_cases"] == 4
    assert res["per_class"]["slab"] > 0.5
    assert res["mean"] == pytest.approx(np.mean(list(res["per_class"].values())))


def test_training_is_deterministic_with_seed():
    images, labels = _toy_cases(n=3, shape=(8, 8, 8))
    kw = dict(steps=3, batch_size=2, channels=(4, 8), norm_num_groups=4, augment=True, progress=False)
    a = train_segnet(images, labels, seed=0, **kw)
    b = train_segnet(images, labels, seed=0, **kw)
    c = train_segnet(images, labels, seed=1, **kw)
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    # same seed, same crops and initial weights; two instances may still round differently in
    # the last bits (CPU kernels), which 3 steps cannot grow beyond these bounds
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], atol=1e-5, rtol=1e-5)
    assert b.loss_history == pytest.approx(a.loss_history, rel=1e-5)
    # another seed: other crops and weights, far outside those bounds
    assert max(float((sa[k].float() - sc[k].float()).abs().max()) for k in sa) > 1e-2
    assert a.model.config.num_classes == 3  # default: largest label + 1


def test_train_segnet_input_errors():
    images, labels = _toy_cases(n=2, shape=(8, 8, 8))
    with pytest.raises(DataError, match="label shape"):
        train_segnet(images, [lb[:4] for lb in labels], steps=1, progress=False)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        train_segnet(images, labels, num_classes=2, steps=1, progress=False)
    with pytest.raises(ConfigError, match="divisible"):
        train_segnet(images, labels, crop_shape=(6, 8, 8), channels=(4, 8, 8), steps=1, progress=False)
    with pytest.raises(DataError, match="smaller than crop_shape"):
        train_segnet(images, labels, crop_shape=(16, 8, 8), steps=1, progress=False)
    bad = [lb.astype(np.float32) for lb in labels]
    with pytest.raises(DataError, match="integer"):
        train_segnet(images, bad, steps=1, progress=False)


def test_the_result_holds_what_the_loop_chose(monkeypatch):
    """Scripted validation scores (best at step 4 of 6): the result names that step, and its model
    has the weights of a run stopped there."""
    from medlsdm.training import segnet as segnet_module

    images, labels = _toy_cases(n=3, shape=(8, 8, 8))
    kw = dict(num_classes=3, batch_size=2, channels=(4, 8), norm_num_groups=4, progress=False, seed=0)
    scores = iter([0.1, 0.5, 0.3])
    monkeypatch.setattr(segnet_module, "validation_dice", lambda *args: next(scores))
    fit = train_segnet(images, labels, steps=6, eval_every=2, val_images=images, val_labels=labels, **kw)
    assert fit.val_history == [(2, 0.1), (4, 0.5), (6, 0.3)] and (fit.best_step, fit.best_score) == (4, 0.5)
    assert fit.best_step <= fit.stopped_step == fit.max_steps == 6 and len(fit.loss_history) == 6
    assert fit.seconds > 0 and not fit.model.training
    at_best = train_segnet(images, labels, steps=4, **kw)
    assert at_best.val_history == [] and at_best.best_step is None and at_best.stopped_step == 4
    assert at_best.loss_history == pytest.approx(fit.loss_history[:4], rel=1e-5)
    best, last = at_best.model.state_dict(), fit.model.state_dict()
    for k in best:  # the same rounding bounds as test_training_is_deterministic_with_seed
        torch.testing.assert_close(last[k], best[k], atol=1e-5, rtol=1e-5)


def test_case_scores_keep_the_lesion_apart_and_seeds_average_per_case():
    names = ["background", "liver", "kidney", "lesion"]
    assert lesion_classes(names) == ["lesion"] and lesion_classes(["bg", "Tumour core", "liver"]) == ["Tumour core"]
    dice = {
        "per_case": [
            {"liver": 0.8, "kidney": 0.6, "lesion": 0.0},
            {"liver": 1.0, "kidney": float("nan"), "lesion": float("nan")},
        ]
    }
    scores = case_scores(dice, names)
    assert (
        scores["organ"] == pytest.approx([0.7, 1.0]) and scores["lesion"][0] == 0.0 and math.isnan(scores["lesion"][1])
    )
    avg = average_over_seeds([[0.2, float("nan")], [0.4, float("nan")]])
    assert avg[0] == pytest.approx(0.3) and math.isnan(avg[1])


def test_segnet_early_stopping_keeps_the_best_validation_weights(one_thread):
    from medlsdm.training.segnet import train_segnet

    images = [make_case(i)[0][None] for i in range(3)]
    labels = [make_case(i)[1] for i in range(3)]
    fit = train_segnet(
        images[:2],
        labels[:2],
        num_classes=3,
        steps=6,
        eval_every=2,
        val_images=images[2:],
        val_labels=labels[2:],
        channels=(4, 8),
        norm_num_groups=4,
        progress=False,
    )
    steps, scores = zip(*fit.val_history)
    assert steps == (2, 4, 6) and fit.best_step == steps[int(np.argmax(scores))]
    with pytest.raises(ConfigError, match="val_images and val_labels"):
        train_segnet(images, labels, num_classes=3, steps=1, val_images=images, progress=False)
