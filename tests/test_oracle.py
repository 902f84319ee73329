"""The oracle comparison (medlsdm.evaluation.oracle): factor estimators and the generator-vs-oracle statistics,
with a perfect sampler (a second oracle draw) as positive control and a collapsed one as negative control."""

from __future__ import annotations

import numpy as np
import pytest

from medlsdm.data.classes import TORSO_CT
from medlsdm.errors import DataError
from medlsdm.evaluation.oracle import (
    compare_with_oracle,
    factor_estimates,
    factor_preservation,
    texture_classes,
    texture_sentence,
    texture_vs_oracle,
)

NAMES = list(TORSO_CT.names)


def _labels(m=6, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.zeros((m, 8, 12, 12), np.int64)
    labels[:, :, 1:11, 1:11] = NAMES.index("soft_tissue")
    for i in range(m):
        a = rng.integers(2, 4)
        labels[i, :, 2 : 2 + a + 3, 2:8] = NAMES.index("liver")
        labels[i, :, 7:10, 8:11] = NAMES.index("aorta")
    return labels


def _render(labels, rng, n):
    """``n`` renders per label map: aorta and liver intensities drawn per render (hidden factors) + noise."""
    out = np.empty((len(labels), n, 1, *labels.shape[1:]), np.float32)
    for i, lab in enumerate(labels):
        for k in range(n):
            img = np.where(lab > 0, 0.05, -1.0)
            img = np.where(lab == NAMES.index("aorta"), rng.uniform(0.1, 0.4), img)
            img = np.where(lab == NAMES.index("liver"), rng.uniform(0.0, 0.1), img)
            out[i, k, 0] = img + rng.normal(0, 0.01, lab.shape)
    return out


def test_factor_estimates_recover_known_class_means():
    labels = _labels(2)
    images = np.where(labels == NAMES.index("aorta"), 0.3, 0.0).astype(np.float32)
    est = factor_estimates(list(images), list(labels), NAMES, "torso-ct")
    assert np.allclose(est["aorta_mean"], 0.3) and np.allclose(est["liver_mean"], 0.0)
    assert np.all(np.isnan(est["kidney_mean"]))  # absent class
    # the noise estimator scales with the noise: twice the std, twice the estimate; zero without noise
    lab = np.full((12, 24, 24), NAMES.index("liver"))
    rng = np.random.default_rng(0)
    white = rng.normal(0, 1, lab.shape)
    noise = factor_estimates([0.02 * white, 0.04 * white, 0 * white], [lab] * 3, NAMES, "torso-ct")["noise"]
    assert noise[1] / noise[0] == pytest.approx(2.0, rel=1e-6) and noise[2] == 0.0
    a, b = np.arange(10.0), np.arange(10.0) * 2 + 1
    assert factor_preservation({"f": a}, {"f": b})["f"] == pytest.approx(1.0)
    assert abs(factor_preservation({"f": a}, {"f": np.random.default_rng(0).permutation(a)})["f"]) < 0.9


def test_a_perfect_sampler_passes_and_a_collapsed_one_fails():
    rng = np.random.default_rng(1)
    labels = _labels()
    oracle = _render(labels, rng, 8)
    perfect = _render(labels, rng, 4)  # positive control: fresh draws from the true distribution
    res = compare_with_oracle(perfect, oracle, oracle, labels, NAMES, "torso-ct")
    assert 0.6 < res["diversity_ratio"] < 1.6 and 0.6 < res["diversity_reference"] < 1.6
    assert {"aorta_mean", "liver_mean"} <= set(res["counted"])  # raw == reconstructed: every varying factor preserved
    assert min(res["factor_ks_p"].values()) > 0.01
    assert all(
        0.5 < res[k][f] < 2.0
        for k in ("factor_spread_ratio", "factor_spread_reference")
        for f in ("aorta_mean", "liver_mean")
    )
    collapsed = np.repeat(perfect[:, :1], 4, axis=1)  # negative control: the same output for every seed
    bad = compare_with_oracle(collapsed, oracle, oracle, labels, NAMES, "torso-ct")
    assert bad["diversity_ratio"] == 0.0 and bad["factor_spread_ratio"]["aorta_mean"] == 0.0
    shifted = perfect.copy()  # negative control: aorta 0.3 too bright in every sample
    shifted[:, :, 0][np.broadcast_to(labels[:, None] == NAMES.index("aorta"), shifted[:, :, 0].shape)] += 0.3
    off = compare_with_oracle(shifted, oracle, oracle, labels, NAMES, "torso-ct")
    assert off["factor_ks_p"]["aorta_mean"] < 0.01 and off["factor_w1"]["aorta_mean"] > 0.2


def test_a_sampler_whose_label_map_fixes_the_factor_has_no_within_map_spread():
    """Negative control of the spread ratio: every map draws its own aorta value once and all its samples share it,
    so the pooled values still follow the oracle's distribution but the noise draws nothing."""
    rng = np.random.default_rng(3)
    labels = _labels(12)
    oracle = _render(labels, rng, 8)
    fixed = _render(labels, rng, 4)
    aorta = labels == NAMES.index("aorta")
    for i, value in enumerate(rng.uniform(0.1, 0.4, len(labels))):
        fixed[i, :, 0][:, aorta[i]] = value + rng.normal(0, 0.01, (4, int(aorta[i].sum())))
    res = compare_with_oracle(fixed, oracle, oracle, labels, NAMES, "torso-ct")
    assert res["factor_all"]["aorta_mean"]["ks_p"] > 0.01  # the pooled test does not see it
    assert res["factor_spread_ratio"]["aorta_mean"] < 0.1 and res["factor_spread_ratio"]["liver_mean"] > 0.5


def test_a_factor_the_autoencoder_loses_is_not_counted():
    rng = np.random.default_rng(2)
    labels = _labels()
    raw = _render(labels, rng, 4)
    recon = raw.copy()
    aorta = np.broadcast_to(labels[:, None, None] == NAMES.index("aorta"), recon.shape)
    recon[aorta] = 0.25  # the autoencoder paints the aorta with one value: its factor is lost
    res = compare_with_oracle(raw, recon, raw, labels, NAMES, "torso-ct")
    assert "aorta_mean" not in res["counted"] and "liver_mean" in res["counted"]
    assert "aorta_mean" in res["factor_all"]


@pytest.fixture(scope="module")
def torso_renders():
    """Two torso anatomies rendered 12 times each (fresh factors, texture and CT noise), in [-1, 1]:
    ``(2, 12, 1, D, H, W)`` and their label maps."""
    from medlsdm.data.phantom import oracle_rerenders

    volumes, labels = [], []
    for index in (3, 5):
        label, _, images, _ = oracle_rerenders("torso-ct", 1, index, list(range(12)), (48, 48, 16))
        labels.append(np.moveaxis(label, -1, 0))
        volumes.append(np.stack([np.clip(np.moveaxis(im, -1, 0) / 1000, -1, 1) for im in images])[:, None])
    return np.stack(volumes).astype(np.float32), np.stack(labels)


def test_a_decoder_without_noise_fails_the_texture_ratios(torso_renders):
    """Positive control: fresh renders of the same anatomies (a perfect sampler) pass both target ranges against the
    raw oracle; negative control: the same renders smoothed (what a decoder without noise gives) fail both."""
    from scipy import ndimage

    volumes, labels = torso_renders
    perfect, oracle_raw = volumes[:, :6], volumes[:, 6:]
    good = texture_vs_oracle(perfect, oracle_raw, labels, NAMES, "torso-ct")
    assert 0.7 <= good["noise_ratio"] <= 1.3 and 0.5 <= good["hf_power_ratio"] <= 2.0
    assert 0.7 <= good["noise_ratio_reference"] <= 1.3 and 0.5 <= good["hf_power_ratio_reference"] <= 2.0
    smooth = ndimage.gaussian_filter(perfect, (0, 0, 0, 1, 1, 1))
    bad = texture_vs_oracle(smooth, oracle_raw, labels, NAMES, "torso-ct")
    assert bad["noise_ratio"] < 0.7 and bad["hf_power_ratio"] < 0.5
    assert bad["noise_ratio_reference"] == good["noise_ratio_reference"]  # the reference is the oracle's alone
    text = texture_sentence(bad)
    assert text.count("below the target") == 2 and f"{bad['noise_ratio']:.2f}×" in text


def test_texture_splits_into_autoencoder_and_diffusion(torso_renders):
    """The samples' ratio is the autoencoder's (oracle through it over raw) times the diffusion model's
    (samples over the autoencoded oracle); the sentence names the step that departs further from 1."""
    from scipy import ndimage

    volumes, labels = torso_renders
    oracle_raw = volumes[:, 6:]
    autoencoded = ndimage.gaussian_filter(oracle_raw, (0, 0, 0, 0.5, 0.5, 0.5))  # a mild loss in the autoencoder
    samples = ndimage.gaussian_filter(volumes[:, :6], (0, 0, 0, 1.2, 1.2, 1.2))  # a larger one in the samples
    res = texture_vs_oracle(samples, oracle_raw, labels, NAMES, "torso-ct", autoencoded=autoencoded)
    for key in ("noise_ratio", "hf_power_ratio"):
        assert res[key] == pytest.approx(res[f"{key}_autoencoder"] * res[f"{key}_diffusion"])
        assert res[f"{key}_autoencoder"] < 1 and res[f"{key}_diffusion"] < 1
    assert set(res["noise_level"]) == {"synthetic", "oracle", "oracle via the autoencoder"}
    assert (
        res["noise_level"]["synthetic"]
        < res["noise_level"]["oracle via the autoencoder"]
        < res["noise_level"]["oracle"]
    )
    assert "the larger departure from 1 is the diffusion model's" in texture_sentence(res)
    with pytest.raises(DataError, match="even number"):
        texture_vs_oracle(samples, oracle_raw[:, :3], labels, NAMES, "torso-ct")


def test_texture_classes_of_each_dataset():
    assert texture_classes(NAMES, "torso-ct") == [NAMES.index("liver"), NAMES.index("fat")]
    assert texture_classes(["background", "a", "b"], "nifti") == [1, 2]  # not listed: every class


def test_spread_sentence_follows_the_numbers():
    from medlsdm.evaluation.oracle import spread_sentence

    judged = {
        "counted": ["bone_mean", "liver_mean"],
        "factor_spread_ratio": {"bone_mean": 0.2, "liver_mean": 0.9, "noise": 0.1},
        "factor_spread_reference": {"bone_mean": 0.9, "liver_mean": 1.1, "noise": 1.0},
    }
    text = spread_sentence(judged)
    assert "bone_mean 0.20" in text and "bone_mean varies less than 0.5×" in text and "liver_mean varies" not in text
    judged["factor_spread_ratio"]["bone_mean"] = 0.7
    assert "draw their appearance from their noise" in spread_sentence(judged)
    assert "cannot be judged" in spread_sentence({**judged, "counted": []})
    # a high diversity ratio beside a fixed factor is explained, not left to read as success
    judged["factor_spread_ratio"]["bone_mean"] = 0.2
    assert "does not contradict" in spread_sentence({**judged, "diversity_ratio": 1.2})
    assert "does not contradict" not in spread_sentence({**judged, "diversity_ratio": 0.3})
    judged["factor_spread_ratio"]["bone_mean"] = 0.7
    assert "does not contradict" not in spread_sentence({**judged, "diversity_ratio": 1.2})
