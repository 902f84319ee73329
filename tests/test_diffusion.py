"""Latent diffusion training: latents, condition dropout, EMA pipeline, resume."""
import numpy as np
import pytest
import torch

from medlsdm.errors import ConfigError, DataError
from medlsdm.models.unet import SemanticUNet, null_condition, semantic_condition
from medlsdm.pipelines.loading import load_pipeline
from medlsdm.training.datasets import LatentDataset
from medlsdm.training.diffusion import diffusion_loss, make_scheduler, train_diffusion

TINY_UNET = dict(channels=(8, 16), attention_levels=(False, True), norm_num_groups=4, num_heads=2, batch_size=2)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from medlsdm.data.phantom import make_phantom
    from medlsdm.data.prepare import prepare_dataset
    from medlsdm.training.vqgan import train_vqgan

    root = tmp_path_factory.mktemp("diffusion_run")
    make_phantom("torso-ct", root / "raw", 4, seed=0, shape=(32, 32, 16))
    prepare_dataset("torso-ct", root / "raw", root / "data", spacing=[12.0, 11.0, 11.0], block_shape=[16, 32, 32], fractions=(0.5, 0.25, 0.25))
    train_vqgan(root, steps=2, crop_shape=(16, 32, 32), channels=(8, 8, 8), num_embeddings=16, norm_num_groups=4,
                decoder="spade", progress=False, checkpoint_every=None)
    return root


def test_condition_dropout_trains_the_null_condition():
    torch.manual_seed(0)
    unet = SemanticUNet(in_channels=2, out_channels=2, num_classes=3, channels=(8,), attention_levels=(False,), norm_num_groups=4)
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0, 0.1)
    sched = make_scheduler(50)
    z = torch.randn(4, 2, 4, 4, 4)
    labels = torch.randint(0, 3, (4, 16, 16, 16))
    dropped = diffusion_loss(unet, sched, z, labels, cond_drop_prob=1.0, generator=torch.Generator().manual_seed(1))
    kept = diffusion_loss(unet, sched, z, labels, cond_drop_prob=0.0, generator=torch.Generator().manual_seed(1))
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
    unet = SemanticUNet(in_channels=2, out_channels=2, num_classes=3, channels=(8,), attention_levels=(False,), norm_num_groups=4)
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0, 0.1)
    z = torch.randn(4, 2, 4, 4, 4)
    labels = torch.randint(0, 3, (4, 16, 16, 16))
    v_sched, eps_sched = make_scheduler(50, prediction_type="v_prediction"), make_scheduler(50)

    def loss(sched):
        return diffusion_loss(unet, sched, z, labels, cond_drop_prob=0.0, generator=torch.Generator().manual_seed(1)).item()

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
    assert sorted(p.name for p in (run_dir / "diffusion").glob("samples-*.npz")) == ["samples-0000002.npz", "samples-0000004.npz"]
    pipe = load_pipeline(run_dir)
    assert pipe.vqgan.config.scaling_factor == pytest.approx(summary["latent_scale"]) and "latent_scale" not in pipe.config
    labels = np.load(run_dir / "diffusion" / "samples-0000004.npz")["labels"]
    out = pipe(labels[:1], num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 1, 16, 32, 32)
    # the saved UNet holds the EMA weights, not the raw ones
    ckpt = torch.load(sorted((run_dir / "diffusion" / "checkpoints").glob("*.pt"))[-1], weights_only=False)
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
    train_diffusion(run_dir, steps=1, progress=False, conditioning="spade", label_encoder_channels=4,
                    out_dir=tmp_path / "diffusion", pipeline_dir=tmp_path / "pipeline", **TINY_UNET)
    unet = SemanticUNet.from_pretrained(tmp_path / "pipeline" / "unet")
    assert unet.config.label_encoder_channels == 4 and unet.label_encoder.convs[-1].out_channels == 4
