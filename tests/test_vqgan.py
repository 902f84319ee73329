"""Tests of medlsdm.models (blocks, VQ-GAN, vector quantiser, discriminators)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from medlsdm.errors import ConfigError, DataError
from medlsdm.models import VQGAN, PatchDiscriminator, VectorQuantizerEMA, blocks, one_hot
from medlsdm.profiles import PROFILES
from medlsdm.training.diffusion import latent_normalization

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(channels=(8, 16), num_embeddings=16, embedding_dim=4, norm_num_groups=4)


def tiny(spatial_dims=3, **kw):
    torch.manual_seed(0)
    return VQGAN(spatial_dims, **{**TINY, **kw})


@pytest.mark.parametrize("spatial_dims,shape", [(3, (2, 1, 8, 16, 12)), (2, (3, 1, 16, 8))])
@pytest.mark.parametrize("decoder", ["normal", "spade"])
def test_shapes(spatial_dims, shape, decoder):
    model = tiny(spatial_dims, decoder_type=decoder, num_classes=3, channels=(8, 16, 16))  # 4x per axis
    x = torch.rand(shape) * 2 - 1
    labels = torch.randint(0, 3, (shape[0], *shape[2:]))
    z = model.encode(x).latents
    assert z.shape == (shape[0], 4, *[s // 4 for s in shape[2:]])
    zq, idx, stats = model.quantize(z)
    assert zq.shape == z.shape and idx.shape == (shape[0], *z.shape[2:])
    assert set(stats) == {"commitment_loss", "perplexity", "usage"}
    out = model(x, labels)
    assert out.reconstruction.shape == x.shape
    assert model.decode(zq, force_not_quantize=True, labels=one_hot(labels, 3)).sample.shape == x.shape


def test_bad_inputs_raise_medlsdm_errors():
    model = tiny(channels=(8, 16, 16))
    with pytest.raises(DataError, match="divisible by 4"):
        model(torch.zeros(1, 1, 8, 16, 10))
    with pytest.raises(DataError, match="5-D"):
        model(torch.zeros(1, 8, 16, 16))
    spade = tiny(decoder_type="spade", num_classes=3)
    with pytest.raises(ConfigError, match="pass labels"):
        spade(torch.zeros(1, 1, 8, 8, 8))
    with pytest.raises(DataError, match="num_classes=3"):
        spade(torch.zeros(1, 1, 8, 8, 8), torch.zeros(1, 4, 8, 8, 8))
    with pytest.raises(ConfigError):
        VQGAN(decoder_type="spade")  # no num_classes
    with pytest.raises(ConfigError):
        VQGAN(spatial_dims=1)


def test_latent_normalisation_standardises_each_channel_and_inverts():
    z = torch.randn(6, 3, 2, 4, 4) * torch.tensor([0.3, 1.0, 2.0]).view(1, 3, 1, 1, 1) + torch.tensor(
        [1.0, 0.0, -2.0]
    ).view(1, 3, 1, 1, 1)
    per_channel = tiny(**latent_normalization(z, "channel"))
    x = per_channel.to_diffusion(z)
    torch.testing.assert_close(x.mean((0, 2, 3, 4)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std((0, 2, 3, 4)), torch.ones(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_channel.from_diffusion(x), z, atol=1e-5, rtol=1e-5)
    # one scale (diffusers' autoencoders, and every VQ-GAN saved before the per-channel statistics): z / std(z), whose
    # channels keep their unequal spreads
    single = tiny(**latent_normalization(z, "global"))
    torch.testing.assert_close(single.to_diffusion(z), z / z.std())
    assert single.to_diffusion(z).std((0, 2, 3, 4))[0] < 0.5
    assert tiny().to_diffusion(z) is not z and torch.equal(tiny().to_diffusion(z), z)
    with pytest.raises(ConfigError, match="latent_norm"):
        latent_normalization(z, "batch")


def test_save_load_round_trip(tmp_path):
    model = tiny(
        decoder_type="spade", num_classes=3, scaling_factor=0.5, latents_mean=[0.1, -0.2], latents_std=[1.5, 0.5]
    )
    x = torch.rand(2, 1, 8, 8, 8) * 2 - 1
    labels = torch.randint(0, 3, (2, 8, 8, 8))
    model.train()
    model(x, labels)  # initialises and updates the codebook buffers
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = VQGAN.from_pretrained(tmp_path).eval()
    assert loaded.config.decoder_type == "spade" and loaded.config.num_classes == 3
    assert loaded.config.scaling_factor == 0.5 and list(loaded.config.latents_std) == [1.5, 0.5]
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    with torch.no_grad():  # two instances: the CPU kernels may sum in another order (last bits differ)
        a, b = model(x, labels), loaded(x, labels)
    assert torch.equal(a.indices, b.indices)  # the same codes, so the decoders see the same input
    torch.testing.assert_close(b.reconstruction, a.reconstruction, atol=1e-5, rtol=1e-5)


def _old_format(folder):
    """Rewrite a saved VQ-GAN as saved before the renames: config ``decoder`` (no
    ``scaling_factor``), weights ``decoder_net.*``."""
    config = json.loads((folder / "config.json").read_text())
    config["decoder"] = config.pop("decoder_type")
    del config["scaling_factor"]
    (folder / "config.json").write_text(json.dumps(config))
    weights = load_file(folder / "diffusion_pytorch_model.safetensors")
    old = {k.replace("decoder.", "decoder_net.", 1) if k.startswith("decoder.") else k: v for k, v in weights.items()}
    save_file(old, folder / "diffusion_pytorch_model.safetensors")
    return old


def test_folder_saved_in_the_old_format_loads(tmp_path):
    model = tiny(decoder_type="spade", num_classes=3).eval()
    x = torch.rand(1, 1, 8, 8, 8) * 2 - 1
    labels = torch.randint(0, 3, (1, 8, 8, 8))
    model.save_pretrained(tmp_path)
    old = _old_format(tmp_path)
    assert any(k.startswith("decoder_net.") for k in old) and not any(k.startswith("decoder.") for k in old)
    loaded = VQGAN.from_pretrained(tmp_path).eval()
    assert loaded.config.decoder_type == "spade" and "decoder" not in loaded.config  # not the default "normal"
    assert isinstance(loaded.decoder, torch.nn.Module) and loaded.config.scaling_factor == 1.0
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(x, labels).reconstruction, model(x, labels).reconstruction, atol=1e-5, rtol=1e-4
        )
    # a checkpoint's plain state dict with the old keys loads too (torch's load_state_dict)
    fresh = tiny(decoder_type="spade", num_classes=3)
    fresh.load_state_dict(old)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    with pytest.raises(RuntimeError, match="bogus"):  # other unknown keys are still refused
        fresh.load_state_dict({**old, "bogus.weight": torch.zeros(1)})


def test_decode_quantizes_unless_told_not_to():
    model = tiny(decoder_type="spade", num_classes=3).eval()
    labels = torch.randint(0, 3, (1, 8, 8, 8))
    z = torch.randn(1, 4, 2, 2, 2)
    zq, _, _ = model.quantize(z, update=False)
    with torch.no_grad():
        snapped = model.decode(z, labels=labels).sample
        torch.testing.assert_close(
            snapped, model.decode(zq, force_not_quantize=True, labels=labels).sample, atol=1e-6, rtol=0
        )
        raw = model.decode(z, force_not_quantize=True, labels=labels).sample
        assert (raw - snapped).abs().max() > 1e-3  # z is not a code: decoding it as it is differs
        x = torch.rand(1, 1, 8, 8, 8) * 2 - 1
        out = model(x, labels)  # forward decodes its codes as they are
        zq, _, _ = model.quantize(model.encode(x).latents, update=False)
        torch.testing.assert_close(out.reconstruction, model.decode(zq, True, labels=labels).sample, atol=0, rtol=0)


def _quantizer(codebook, decay=0.5, restart_after=0):
    q = VectorQuantizerEMA(len(codebook), len(codebook[0]), decay=decay, epsilon=0.0, restart_after=restart_after)
    cb = torch.tensor(codebook, dtype=torch.float32)
    q.codebook.copy_(cb)
    q.embed_sum.copy_(cb)
    q.cluster_size.fill_(1.0)
    q.initialized.fill_(True)
    return q.train()


def _latent(rows):
    """(N, D) rows → a 2-D latent (1, D, N, 1)."""
    return torch.tensor(rows, dtype=torch.float32).t()[None, :, :, None]


def test_ema_codebook_update_closed_form():
    q = _quantizer([[0.0], [10.0]])
    zq, idx, stats = q(_latent([[1.0], [1.0], [9.0]]))
    assert idx.flatten().tolist() == [0, 0, 1]
    assert torch.allclose(zq.flatten(), torch.tensor([0.0, 0.0, 10.0]))  # quantised with the old codes
    # counts [2, 1], sums [2, 9]; N = .5·1 + .5·[2, 1] = [1.5, 1]; m = .5·[0, 10] + .5·[2, 9] = [1, 9.5]
    assert torch.allclose(q.cluster_size, torch.tensor([1.5, 1.0]))
    assert torch.allclose(q.codebook.flatten(), torch.tensor([1.0 / 1.5, 9.5]))
    assert torch.isclose(stats["commitment_loss"], torch.tensor(0.25 * (1 + 1 + 1) / 3))
    before = q.codebook.clone()
    q.eval()
    q(_latent([[1.0], [9.0]]))  # no update in eval mode
    assert torch.equal(q.codebook, before)


def test_dead_codes_are_restarted_from_the_batch():
    codebook = [[0.0, 0.0], [5.0, 5.0], [100.0, 100.0], [-100.0, -100.0]]
    batch = [[0.1, 0.0], [0.0, 0.2], [5.0, 5.1], [4.9, 5.0], [0.3, 0.1]]

    def run(seed):
        torch.manual_seed(seed)
        q = _quantizer(codebook, decay=0.9, restart_after=2)
        q(_latent(batch))
        assert torch.equal(q.codebook[2:], torch.tensor(codebook[2:]))  # unused once: not yet dead
        assert q.unused_steps.tolist() == [0, 0, 1, 1]
        q(_latent(batch))
        return q

    q = run(0)
    rows = torch.tensor(batch)
    for k in (2, 3):  # restarted with vectors of the current batch
        assert any(torch.equal(q.codebook[k], r) for r in rows), q.codebook[k]
        assert q.cluster_size[k] == 1.0 and q.unused_steps[k] == 0
    assert q.codebook[:2].abs().max() < 10  # the used codes only moved by EMA
    torch.testing.assert_close(run(0).codebook, q.codebook, atol=1e-6, rtol=1e-6)  # seeded: reproducible


def test_first_training_batch_initialises_codebook():
    torch.manual_seed(0)
    q = VectorQuantizerEMA(6, 3).train()
    z = torch.randn(1, 3, 5, 4)
    q(z)
    assert bool(q.initialized)
    rows = z.movedim(1, -1).reshape(-1, 3)
    # after init the EMA step moves codes toward their members; restart is not triggered yet,
    # so every code is either an original row or a convex mix of rows assigned to it
    assert q.codebook.shape == (6, 3) and q.codebook.abs().max() <= rows.abs().max() + 1e-5


@pytest.mark.parametrize(
    "indices,k,perplexity,usage",
    [
        ([0, 0, 0, 0], 4, 1.0, 0.25),
        ([0, 1, 2, 3], 4, 4.0, 1.0),
        ([0, 0, 1, 1], 8, 2.0, 0.25),
        ([2, 2, 2, 5], 8, 2**0.8112781244591328, 0.25),  # H = 0.8113 bits
    ],
)
def test_usage_and_perplexity_closed_form(indices, k, perplexity, usage):
    stats = VectorQuantizerEMA.code_stats(torch.tensor(indices), k)
    assert float(stats["perplexity"]) == pytest.approx(perplexity, rel=1e-5)
    assert float(stats["usage"]) == pytest.approx(usage)


def test_straight_through_gradient():
    q = _quantizer([[0.0], [10.0]])
    z = _latent([[1.0], [9.0]]).requires_grad_(True)
    zq, _, _ = q(z, update=False)
    zq.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_encode_and_decode_return_what_diffusers_vqmodel_returns():
    """``encode``/``decode`` as diffusers' ``VQModel``: its output classes, its argument order
    (``decode(h, force_not_quantize, return_dict)``, the label map a keyword only), its tuples."""
    from diffusers.models.autoencoders.vae import DecoderOutput
    from diffusers.models.autoencoders.vq_model import VQEncoderOutput

    model = tiny(decoder_type="spade", num_classes=3).eval()
    x, labels = torch.rand(2, 1, 8, 8, 8) * 2 - 1, torch.randint(0, 3, (2, 8, 8, 8))
    with torch.no_grad():
        enc = model.encode(x)
        assert isinstance(enc, VQEncoderOutput) and torch.equal(model.encode(x, return_dict=False)[0], enc.latents)
        zq, _, stats = model.quantize(enc.latents, update=False)
        dec = model.decode(enc.latents, labels=labels)
        assert isinstance(dec, DecoderOutput) and torch.equal(dec.commit_loss, stats["commitment_loss"])
        sample, commit_loss = model.decode(enc.latents, False, False, labels=labels)
        assert torch.equal(sample, dec.sample) and torch.equal(commit_loss, dec.commit_loss)
        raw = model.decode(zq, True, labels=labels)
        assert torch.equal(raw.commit_loss, torch.zeros(2)) and torch.equal(raw.sample, model(x, labels).reconstruction)
    with pytest.raises(TypeError):
        model.decode(zq, False, True, labels)  # the label map is a keyword


def test_spade_decoder_uses_the_label_map():
    model = tiny(decoder_type="spade", num_classes=3).eval()
    zq = torch.randn(1, 4, 4, 4, 4)
    a = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    b = a.clone()
    b[:, :4] = 2
    with torch.no_grad():
        out_a, out_b = (model.decode(zq, force_not_quantize=True, labels=y).sample for y in (a, b))
    assert (out_a - out_b).abs().max() > 1e-4
    normal = tiny().eval()
    with torch.no_grad():  # one model, the same latent: the label map is not read, so exactly equal
        assert torch.equal(normal.decode(zq, labels=a).sample, normal.decode(zq, labels=b).sample)


def test_gradient_checkpointing_gives_same_gradients():
    x = torch.rand(1, 1, 8, 8, 8)
    labels = torch.randint(0, 3, (1, 8, 8, 8))
    grads = []
    for checkpointing in (False, True):
        model = tiny(decoder_type="spade", num_classes=3).eval()
        if checkpointing:
            model.enable_gradient_checkpointing()
        model(x, labels).reconstruction.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    # two instances, and checkpointing recomputes the forward pass: float32 rounding only
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)


def test_patch_discriminator_shapes():
    d3 = PatchDiscriminator(3, channels=8, num_layers=2, norm_num_groups=4)
    feats = d3(torch.zeros(2, 1, 8, 16, 16))
    assert feats[-1].shape == (2, 1, 2, 4, 4) and len(feats) == 4
    d2 = PatchDiscriminator(2, channels=8, num_layers=3, norm_num_groups=4)
    assert d2(torch.zeros(3, 1, 16, 16))[-1].shape == (3, 1, 2, 2)
    with pytest.raises(DataError, match=">= 8"):
        d2(torch.zeros(1, 1, 4, 16))


def test_bf16_autocast_gradients_match_float32():
    # depth 8 → the deepest level has depth 2, where torch's CPU bf16 conv3d weight gradient
    # is wrong; blocks.Conv3d computes that case in float32
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 8, 8, 8, generator=g) * 2 - 1
    labels = torch.randint(0, 3, (2, 8, 8, 8), generator=g)
    grads = []
    for bf16 in (False, True):
        model = tiny(decoder_type="spade", num_classes=3, channels=(8, 16, 16)).eval()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x, labels)
            loss = (out.reconstruction.float() - x).abs().mean()
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.isfinite(grads[1]).all()
    # bf16 keeps 8 significant bits (0.4 % per rounding) over ~20 layers: the whole gradient
    # is 2-5 % off for seeds 0-5; the broken kernel gave 1e37. (Per-parameter norms were too
    # strict: a small norm can be 50 % off in bf16 and still harmless.)
    assert ((grads[1] - grads[0]).norm() / grads[0].norm()) < 0.15
    conv = blocks.Conv3d(3, 8, 3, padding=1)
    x, g = torch.rand(2, 3, 2, 6, 6), torch.randn(2, 8, 2, 6, 6)
    conv(x).backward(g)
    ref = conv.weight.grad.clone()
    conv.weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    y.backward(g.to(y.dtype))
    assert torch.allclose(conv.weight.grad, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("profile", ["smoke", "quick"])
def test_profile_block_shapes(profile):
    shape = tuple(PROFILES[profile]["01"]["block_shape"])
    model = VQGAN(channels=(4, 4, 4), norm_num_groups=1, embedding_dim=2, num_embeddings=4).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 1, *shape))
    assert out.reconstruction.shape == (1, 1, *shape)
    assert out.indices.shape == (1, *[s // 4 for s in shape])


def test_paper_block_shape_encodes():
    shape = PROFILES["paper"]["01"]["block_shape"]  # 32×256×256 → 8×64×64 latent
    model = VQGAN(channels=(4, 4, 4), norm_num_groups=1, embedding_dim=2, num_embeddings=4).eval()
    with torch.no_grad():  # (decoding mirrors it; too slow for a unit test)
        assert model.encode(torch.zeros(1, 1, *shape)).latents.shape == (1, 2, *[s // 4 for s in shape])
