"""Latent diffusion training: latents, condition dropout, EMA pipeline, resume."""

import json
import shutil

import numpy as np
import pytest
import torch

from medlsdm.errors import ConfigError, DataError
from medlsdm.models.unet import SemanticUNet, null_condition, semantic_condition
from medlsdm.pipelines.loading import load_pipeline
from medlsdm.training.datasets import LatentDataset
from medlsdm.training.diffusion import diffusion_loss, make_scheduler, train_diffusion

TINY_UNET = dict(channels=(8, 16), attention_levels=(False, True), norm_num_groups=4, num_heads=2, batch_size=2)
TINY_VQGAN = dict(
    crop_shape=(16, 32, 32),
    channels=(8, 8, 8),
    num_embeddings=16,
    norm_num_groups=4,
    decoder_type="spade",
    progress=False,
    checkpoint_every=None,
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from medlsdm.data.phantom import make_phantom
    from medlsdm.data.prepare import prepare_dataset
    from medlsdm.training.vqgan import train_vqgan

    root = tmp_path_factory.mktemp("diffusion_run")
    make_phantom("torso-ct", root / "raw", 4, seed=0, shape=(32, 32, 16))
    prepare_dataset(
        "torso-ct",
        root / "raw",
        root / "data",
        spacing=[12.0, 11.0, 11.0],
        block_shape=[16, 32, 32],
        fractions=(0.5, 0.25, 0.25),
    )
    train_vqgan(root, steps=2, **TINY_VQGAN)
    return root


def test_condition_dropout_trains_the_null_condition():
    torch.manual_seed(0)
    unet = SemanticUNet(
        in_channels=2, out_channels=2, num_classes=3, channels=(8,), attention_levels=(False,), norm_num_groups=4
    )
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0, 0.1)
    sched = make_scheduler(50)
    z = torch.randn(4, 2, 4, 4, 4)
    labels = torch.randint(0, 3, (4, 16, 16, 16))
    dropped = diffusion_loss(
        unet, sched, z, semantic_condition(labels, 3), cond_drop_prob=1.0, generator=torch.Generator().manual_seed(1)
    )
    kept = diffusion_loss(
        unet, sched, z, semantic_condition(labels, 3), cond_drop_prob=0.0, generator=torch.Generator().manual_seed(1)
    )
    # recompute by hand with the null condition: same random draws as the dropped call
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(z.shape, generator=g)
    t = torch.randint(0, 50, (4,), generator=g)
    null = null_condition(semantic_condition(labels, 3))
    by_hand = torch.nn.functional.mse_loss(unet(sched.add_noise(z, noise, t), t, null).sample, noise)
    assert dropped.item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert dropped.item() != pytest.approx(kept.item(), rel=1e-6)


def test_v_prediction_loss_is_the_mse_to_the_velocity():
    """diffusion_loss with a v-prediction scheduler regresses v = sqrt(ab)·eps − sqrt(1 − ab)·x0,
    recomputed here from the scheduler's alpha_bar and the same generator draws; the epsilon
    scheduler on the same draws regresses eps (so the target is what the type changes)."""
    torch.manual_seed(0)
    unet = SemanticUNet(
        in_channels=2, out_channels=2, num_classes=3, channels=(8,), attention_levels=(False,), norm_num_groups=4
    )
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0, 0.1)
    z = torch.randn(4, 2, 4, 4, 4)
    labels = torch.randint(0, 3, (4, 16, 16, 16))
    v_sched, eps_sched = make_scheduler(50, prediction_type="v_prediction"), make_scheduler(50)

    def loss(sched):
        return diffusion_loss(
            unet,
            sched,
            z,
            semantic_condition(labels, 3),
            cond_drop_prob=0.0,
            generator=torch.Generator().manual_seed(1),
        ).item()

    g = torch.Generator().manual_seed(1)  # the draws of diffusion_loss: noise, then timesteps
    noise = torch.randn(z.shape, generator=g)
    t = torch.randint(0, 50, (4,), generator=g)
    ab = v_sched.alphas_cumprod[t].view(-1, 1, 1, 1, 1)
    noisy = ab.sqrt() * z + (1 - ab).sqrt() * noise
    velocity = ab.sqrt() * noise - (1 - ab).sqrt() * z
    with torch.no_grad():
        pred = unet(noisy, t, semantic_condition(labels, 3)).sample
    v_by_hand = torch.nn.functional.mse_loss(pred, velocity).item()
    eps_by_hand = torch.nn.functional.mse_loss(pred, noise).item()
    # our noisy latent and diffusers' differ only in float32 rounding (x ** 0.5 vs sqrt)
    assert loss(v_sched) == pytest.approx(v_by_hand, rel=1e-5)
    assert loss(eps_sched) == pytest.approx(eps_by_hand, rel=1e-5)
    assert abs(v_by_hand - eps_by_hand) > 0.01 * eps_by_hand  # negative control: the targets differ
    assert loss(v_sched) != pytest.approx(eps_by_hand, rel=1e-3)
    # the multiscale term adds lowres_weight × the pooled error of the same prediction
    from medlsdm.training.diffusion import pooled_error

    multiscale = diffusion_loss(
        unet,
        v_sched,
        z,
        semantic_condition(labels, 3),
        cond_drop_prob=0.0,
        generator=torch.Generator().manual_seed(1),
        lowres_weight=0.5,
    ).item()
    assert multiscale == pytest.approx(v_by_hand + 0.5 * pooled_error(pred - velocity, factor=4).item(), rel=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights_make_the_loss_min_snr_times_the_x0_error(prediction_type):
    """Weighted by snr_weights, the ε or v loss of every timestep equals min(SNR, γ)·‖x̂₀ − x₀‖²,
    with x̂₀ recovered from the prediction by the closed-form inversions (ε: (x_t − √(1−ᾱ)ε̂)/√ᾱ;
    v: √ᾱ x_t − √(1−ᾱ) v̂). Negative control: unweighted, the losses are SNR or SNR + 1 times it."""
    from medlsdm.training.diffusion import snr_weights

    sched, gamma = make_scheduler(1000, prediction_type=prediction_type), 5.0
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0, 50, 200, 400, 600, 800, 999])
    x0, noise = (
        torch.randn(7, 64, generator=g, dtype=torch.float64),
        torch.randn(7, 64, generator=g, dtype=torch.float64),
    )
    ab = sched.alphas_cumprod[t].double().view(-1, 1)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    target = noise if prediction_type == "epsilon" else ab.sqrt() * noise - (1 - ab).sqrt() * x0
    pred = target + 0.1 * torch.randn(7, 64, generator=g, dtype=torch.float64)
    x0_hat = (
        (xt - (1 - ab).sqrt() * pred) / ab.sqrt()
        if prediction_type == "epsilon"
        else ab.sqrt() * xt - (1 - ab).sqrt() * pred
    )
    x0_err = (x0_hat - x0).pow(2).mean(1)
    loss = (pred - target).pow(2).mean(1)
    snr = (ab / (1 - ab)).view(-1)
    expected = snr.clamp(max=gamma) * x0_err
    assert (loss * snr_weights(sched, t, gamma).double()).numpy() == pytest.approx(expected.numpy(), rel=1e-5)
    unweighted = snr * x0_err if prediction_type == "epsilon" else (snr + 1) * x0_err
    assert loss.numpy() == pytest.approx(unweighted.numpy(), rel=1e-5)
    assert not np.allclose(loss.numpy(), expected.numpy(), rtol=0.01)  # the weights change the loss


def test_diffusion_loss_applies_the_snr_weights():
    """diffusion_loss(snr_gamma=γ) is the mean of per-sample errors times snr_weights of the drawn t."""
    from medlsdm.training.diffusion import snr_weights

    torch.manual_seed(0)
    unet = SemanticUNet(
        in_channels=2, out_channels=2, num_classes=3, channels=(8,), attention_levels=(False,), norm_num_groups=4
    )
    z, labels, sched = (
        torch.randn(4, 2, 4, 4, 4),
        torch.randint(0, 3, (4, 16, 16, 16)),
        make_scheduler(50, prediction_type="v_prediction"),
    )
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(z.shape, generator=g)
    t = torch.randint(0, 50, (4,), generator=g)
    with torch.no_grad():
        pred = unet(sched.add_noise(z, noise, t), t, semantic_condition(labels, 3)).sample
        per_sample = (pred - sched.get_velocity(z, noise, t)).pow(2).flatten(1).mean(1)
        weighted = diffusion_loss(
            unet,
            sched,
            z,
            semantic_condition(labels, 3),
            cond_drop_prob=0.0,
            generator=torch.Generator().manual_seed(1),
            snr_gamma=2.0,
        )
        plain = diffusion_loss(
            unet,
            sched,
            z,
            semantic_condition(labels, 3),
            cond_drop_prob=0.0,
            generator=torch.Generator().manual_seed(1),
        )
    assert weighted.item() == pytest.approx((per_sample * snr_weights(sched, t, 2.0)).mean().item(), rel=1e-5)
    assert plain.item() == pytest.approx(per_sample.mean().item(), rel=1e-5)
    assert weighted.item() != pytest.approx(plain.item(), rel=1e-3)


@pytest.mark.parametrize("conditioning", ["concat", "spade"])
def test_conditions_averaged_once_give_the_unet_what_it_computes_itself(conditioning):
    """latent_conditions (the one-hot map and extra channels area-averaged once to the latent's
    size) gives the same prediction as the full-resolution condition the UNet averages itself
    (float32 rounding apart); a condition from other labels does not (negative control)."""
    from medlsdm.training.diffusion import latent_conditions

    torch.manual_seed(0)
    unet = SemanticUNet(
        in_channels=2,
        out_channels=2,
        num_classes=3,
        channels=(8, 16),
        attention_levels=(False, True),
        norm_num_groups=4,
        conditioning=conditioning,
        extra_condition_channels=1,
    )
    with torch.no_grad():
        for q in unet.parameters():
            q.normal_(0, 0.1)
    labels, extra = torch.randint(0, 3, (3, 16, 32, 32)), torch.rand(3, 1, 16, 32, 32)
    x, t = torch.randn(3, 2, 4, 8, 8), torch.tensor([3, 300, 900])
    pooled = latent_conditions(labels, extra, 3, (4, 8, 8), chunk=2)
    assert pooled.shape == (3, 5, 4, 8, 8)
    with torch.no_grad():
        full = unet(x, t, semantic_condition(labels, 3, extra)).sample
        torch.testing.assert_close(unet(x, t, pooled).sample, full, rtol=1e-5, atol=1e-5)
        other = latent_conditions((labels + 1) % 3, extra, 3, (4, 8, 8))
        assert (unet(x, t, other).sample - full).abs().max() > 1e-3


def test_bad_prediction_type_is_refused():
    with pytest.raises(ConfigError, match="prediction_type"):
        make_scheduler(prediction_type="x0")


def test_latent_dataset_is_a_function_of_the_index():
    ds = LatentDataset(torch.arange(5.0)[:, None], torch.arange(5)[:, None], seed=3)
    assert [ds[i][0].item() for i in range(10)] == [ds[i][0].item() for i in range(10)]
    assert len({ds[i][0].item() for i in range(50)}) == 5
    with pytest.raises(DataError):
        LatentDataset(torch.zeros(0, 1), torch.zeros(0, 1))


def test_train_diffusion_saves_an_ema_pipeline_and_resumes(run_dir):
    summary = train_diffusion(run_dir, steps=4, sample_every=2, sample_steps=2, progress=False, **TINY_UNET)
    assert summary["steps"] == 4 and np.isfinite(summary["final_loss"]) and summary["latent_scale"] > 0
    assert sorted(p.name for p in (run_dir / "diffusion").glob("samples-*.npz")) == [
        "samples-0000002.npz",
        "samples-0000004.npz",
    ]
    pipe = load_pipeline(run_dir)
    assert (
        pipe.vqgan.config.scaling_factor == pytest.approx(summary["latent_scale"]) and "latent_scale" not in pipe.config
    )
    assert len(pipe.vqgan.config.latents_mean) == len(pipe.vqgan.config.latents_std) == pipe.vqgan.config.embedding_dim
    labels = np.load(run_dir / "diffusion" / "samples-0000004.npz")["labels"]
    out = pipe(labels[:1], num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 1, 16, 32, 32)
    # the saved UNet holds the EMA weights, not the raw ones
    ckpt = torch.load(sorted((run_dir / "diffusion" / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    raw = ckpt["models"]["unet"]
    saved = pipe.unet.state_dict()
    assert any(not torch.equal(raw[k], saved[k]) for k in raw)
    # resume: asking for more steps continues from step 4
    more = train_diffusion(run_dir, steps=6, progress=False, **TINY_UNET)
    assert more["steps"] == 6 and more["steps_this_run"] == 2


def test_unknown_parameter_and_missing_vqgan(tmp_path, run_dir):
    with pytest.raises(ConfigError, match="unknown parameter"):
        train_diffusion(run_dir, stepz=3)
    with pytest.raises(DataError):
        train_diffusion(tmp_path)


def test_train_diffusion_builds_the_label_encoder(run_dir, tmp_path):
    train_diffusion(
        run_dir,
        steps=1,
        progress=False,
        conditioning="spade",
        label_encoder_channels=4,
        out_dir=tmp_path / "diffusion",
        pipeline_dir=tmp_path / "pipeline",
        **TINY_UNET,
    )
    unet = SemanticUNet.from_pretrained(tmp_path / "pipeline" / "unet")
    assert unet.config.label_encoder_channels == 4 and unet.label_encoder.convs[-1].out_channels == 4


def test_train_diffusion_lr_schedule(run_dir, tmp_path):
    """A cosine schedule with warm-up is stepped with the optimiser and kept in the checkpoint
    (its rate after 4 of 4 steps is 1 % of the base); the constant default adds no scheduler,
    so checkpoints of constant-rate runs are as they were."""
    cosine = train_diffusion(
        run_dir,
        steps=4,
        progress=False,
        lr=1e-3,
        lr_schedule="cosine",
        warmup_steps=1,
        out_dir=tmp_path / "cos",
        pipeline_dir=tmp_path / "cos_pipe",
        **TINY_UNET,
    )
    assert cosine["steps"] == 4
    ckpt = torch.load(tmp_path / "cos" / "checkpoints" / "checkpoint-0000004.pt", weights_only=True)
    assert ckpt["optimizers"]["unet"]["param_groups"][0]["lr"] == pytest.approx(1e-5)
    assert ckpt["extra"]["scheduler.unet"]["last_epoch"] == 4
    train_diffusion(
        run_dir, steps=1, progress=False, out_dir=tmp_path / "const", pipeline_dir=tmp_path / "const_pipe", **TINY_UNET
    )
    const = torch.load(tmp_path / "const" / "checkpoints" / "checkpoint-0000001.pt", weights_only=True)
    assert "scheduler.unet" not in const["extra"] and const["optimizers"]["unet"]["param_groups"][0]["lr"] == 1e-3
    with pytest.raises(ConfigError, match="lr_schedule"):
        train_diffusion(run_dir, steps=1, progress=False, lr_schedule="linear", out_dir=tmp_path / "bad", **TINY_UNET)


def test_resume_after_a_new_setting_vqgan_or_manifest_is_refused_or_retrains(run_dir, tmp_path):
    """The diffusion checkpoint's fingerprint holds its settings and digests of the data manifest,
    the split and the upstream VQ-GAN: a change of any raises ConfigError naming it."""
    from medlsdm.training.vqgan import train_vqgan

    run = shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("diffusion", "pipeline"))
    kw = dict(progress=False, **TINY_UNET)
    train_diffusion(run, steps=1, **kw)
    assert train_diffusion(run, steps=2, sample_every=1, sample_steps=2, **kw)["steps_this_run"] == 1  # bookkeeping
    with pytest.raises(ConfigError, match="prediction_type: 'v_prediction' -> 'epsilon'.*resume=False"):
        train_diffusion(run, steps=2, prediction_type="epsilon", **kw)
    manifest = run / "data" / "manifest.json"
    original = manifest.read_text()
    manifest.write_text(json.dumps({**json.loads(original), "note": "data prepared again"}))
    with pytest.raises(ConfigError, match="input manifest"):
        train_diffusion(run, steps=2, **kw)
    manifest.write_text(original)
    train_vqgan(run, steps=2, seed=1, resume=False, **TINY_VQGAN)  # another autoencoder of the same shapes
    with pytest.raises(ConfigError, match="input vqgan"):
        train_diffusion(run, steps=2, **kw)
    assert json.loads((run / "diffusion" / "train_params.json").read_text())["steps"] == 2
    assert sorted(p.name for p in (run / "diffusion").glob("samples-*.npz")) == ["samples-0000002.npz"]
    again = train_diffusion(run, steps=1, on_change="retrain", **kw)
    assert again["steps_this_run"] == 1 and len(again["retrained_because"]) == 1
    assert again["retrained_because"][0].startswith("input vqgan: ")
    assert not list((run / "diffusion").glob("samples-*.npz"))  # the old model's samples went with it


@pytest.mark.notebook
def test_rerunning_notebook_03_with_another_prediction_type_retrains(smoke_run_copy):
    """Notebook 03's exercise 3 rerun in the same run directory trains a new model (its
    on_change="retrain"), never the old weights under a new scheduler or train_params.json."""
    from safetensors.torch import load_file

    from medlsdm.runner import run_notebooks

    run = smoke_run_copy
    weights = run.pipeline / "unet" / "diffusion_pytorch_model.safetensors"
    before = load_file(weights)
    run_notebooks("smoke", run.root, only=["03"], overrides={"prediction_type": "epsilon"})
    after = load_file(weights)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert load_pipeline(run.root).scheduler.config.prediction_type == "epsilon"
    params = json.loads((run.diffusion / "train_params.json").read_text())
    assert params["prediction_type"] == params["fingerprint"]["settings"]["prediction_type"] == "epsilon"
    ckpt = torch.load(sorted((run.diffusion / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    assert ckpt["fingerprint"]["settings"]["prediction_type"] == "epsilon"
    executed = (run.executed / "03_diffusion_training.ipynb").read_text()
    # what the log says changed: this setting alone (the copied run's data and VQ-GAN are the same)
    assert "inputs: prediction_type: 'v_prediction' -> 'epsilon'; on_change='retrain': training afresh" in executed


def test_appearance_swaps_add_copies_of_the_training_cases_and_enter_the_fingerprint(run_dir, tmp_path, caplog):
    import logging

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    kw = dict(progress=False, **TINY_UNET)
    with caplog.at_level(logging.INFO, logger="medlsdm.training.diffusion"):
        train_diffusion(run, steps=1, appearance_swaps=2, resume=False, **kw)
    lines = [r.getMessage() for r in caplog.records]
    assert any("appearance swaps: 2 copies of each of 2 training cases" in m for m in lines)
    assert any(m.startswith("6 training latents") for m in lines), lines  # 2 cases + 2 × 2 copies
    with pytest.raises(ConfigError, match="appearance_swaps"):
        train_diffusion(run, steps=2, appearance_swaps=1, **kw)


def test_pooled_error_weights_a_constant_error_by_the_pool_volume_and_a_checkerboard_by_nothing():
    from medlsdm.training.diffusion import pooled_error

    constant = torch.full((2, 3, 8, 8, 8), 0.5)
    assert float(pooled_error(constant)) == pytest.approx(0.25 * 64)
    checker = (
        torch.arange(8)[:, None, None] + torch.arange(8)[None, :, None] + torch.arange(8)[None, None, :]
    ) % 2 * 2.0 - 1
    assert float(pooled_error(checker.expand(2, 3, 8, 8, 8).float())) == pytest.approx(0.0, abs=1e-7)
    white = torch.randn((64, 1, 8, 16, 16), generator=torch.Generator().manual_seed(0))
    assert float(pooled_error(white)) == pytest.approx(float(white.pow(2).mean()), rel=0.15)  # same weight as the MSE
    assert float(pooled_error(torch.full((1, 1, 8, 8), 0.5))) == pytest.approx(0.25 * 16)  # 2-D
