"""The latent denoiser: shapes, conditioning, null condition and condition dropout."""

import json

import pytest
import torch

from medlsdm.errors import ConfigError
from medlsdm.models.unet import SemanticUNet, SemanticUNetOutput, drop_condition, null_condition, semantic_condition


def tiny(spatial_dims=3, conditioning="spade", num_classes=3, norm_num_groups=4):
    torch.manual_seed(0)
    return SemanticUNet(
        spatial_dims=spatial_dims,
        in_channels=4,
        out_channels=4,
        num_classes=num_classes,
        channels=(8, 16),
        attention_levels=(False, True),
        norm_num_groups=norm_num_groups,
        num_heads=2,
        conditioning=conditioning,
    )


def randomize_zero_inits(model):
    """Output convs start at zero (identity residuals); perturb them so outputs depend on inputs."""
    with torch.no_grad():
        for p in model.parameters():
            if not p.abs().sum():
                p.normal_(0, 0.1)


def test_condition_channels():
    labels = torch.tensor([[[0, 1], [2, 1]]])
    cond = semantic_condition(labels, 3)
    assert cond.shape == (1, 4, 2, 2)
    assert torch.equal(cond[:, :3].argmax(1), labels) and not cond[:, 3].any()
    null = null_condition(cond)
    assert not null[:, :3].any() and null[:, 3].eq(1).all()


def test_drop_condition_probability_and_seed():
    cond = semantic_condition(torch.randint(0, 3, (2000, 2, 2)), 3)
    dropped = drop_condition(cond, 0.25, generator=torch.Generator().manual_seed(0))
    is_null = dropped[:, 3].flatten(1).eq(1).all(1)
    assert 0.2 < is_null.float().mean() < 0.3
    kept = ~is_null
    assert torch.equal(dropped[kept], cond[kept])
    again = drop_condition(cond, 0.25, generator=torch.Generator().manual_seed(0))
    assert torch.equal(dropped, again)
    assert drop_condition(cond, 0.0) is cond


@pytest.mark.parametrize("conditioning", ["spade", "concat"])
def test_3d_shapes_and_label_dependence(conditioning):
    model = tiny(conditioning=conditioning)
    randomize_zero_inits(model)
    x = torch.randn(2, 4, 4, 8, 8)
    labels = torch.randint(0, 3, (2, 16, 32, 32))  # image resolution: 4× the latent's
    out = model(x, torch.tensor([3, 50]), semantic_condition(labels, 3)).sample
    assert out.shape == x.shape
    other = model(x, torch.tensor([3, 50]), semantic_condition((labels + 1) % 3, 3)).sample
    assert not torch.allclose(out, other)
    uncond = model(x, 7, null_condition(semantic_condition(labels, 3))).sample
    assert uncond.shape == x.shape


def test_2d_model():
    model = tiny(spatial_dims=2, num_classes=4)
    out = model(torch.randn(3, 4, 16, 16), torch.tensor(5), semantic_condition(torch.randint(0, 4, (3, 64, 64)), 4))
    assert out.sample.shape == (3, 4, 16, 16)


def test_output_starts_at_zero_and_bad_inputs():
    model = tiny()
    x = torch.randn(1, 4, 4, 8, 8)
    cond = semantic_condition(torch.zeros(1, 4, 8, 8, dtype=torch.long), 3)
    assert model(x, 1, cond).sample.abs().max() == 0  # zero-initialised output convolution
    with pytest.raises(ConfigError, match="divisible"):
        model(torch.randn(1, 4, 3, 8, 8), 1, cond)
    with pytest.raises(ConfigError, match="channels"):
        model(x, 1, cond[:, :3])
    with pytest.raises(ConfigError, match="conditioning"):
        SemanticUNet(conditioning="film")


#: Two model instances with identical weights need not give bit-identical outputs: the CPU
#: kernels (oneDNN/MKL) may pick another summation order for another memory alignment, and
#: Intel and AMD differ in the last bits. On outputs of order 1-4, 2.9e-6 was seen on an AMD
#: EPYC (~10 float32 ulps); these bounds allow ~10x that, while one weight off by 1e-3 moves
#: the output by ~1e-3 (checked below).
SAME_WEIGHTS = dict(atol=2e-5, rtol=1e-5)


def test_save_load_round_trip(tmp_path):
    model = tiny()
    randomize_zero_inits(model)
    model.save_pretrained(tmp_path)
    loaded = SemanticUNet.from_pretrained(tmp_path)
    for key, value in model.state_dict().items():  # a copy of the tensors: exact
        assert torch.equal(value, loaded.state_dict()[key]), key
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 4, 8, 8, generator=g)
    cond = semantic_condition(torch.randint(0, 3, (1, 4, 8, 8), generator=g), 3)
    with torch.no_grad():
        out = model(x, 9, cond).sample
        torch.testing.assert_close(loaded(x, 9, cond).sample, out, **SAME_WEIGHTS)
        loaded.down_blocks[1][0].conv1.weight.view(-1)[0] += 1e-3  # negative control: the bound sees this
        with pytest.raises(AssertionError):
            torch.testing.assert_close(loaded(x, 9, cond).sample, out, **SAME_WEIGHTS)


def test_output_dataclass_or_tuple():
    model = tiny()
    randomize_zero_inits(model)
    x = torch.randn(2, 4, 4, 8, 8)
    cond = semantic_condition(torch.randint(0, 3, (2, 16, 32, 32)), 3)
    out = model(x, 5, cond)
    assert isinstance(out, SemanticUNetOutput) and out.sample.shape == x.shape
    as_tuple = model(x, 5, cond, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
    torch.testing.assert_close(as_tuple[0], out.sample, atol=0, rtol=0)  # one instance, one computation
    assert not torch.allclose(model(x, 500, cond).sample, out.sample)  # the timestep matters


def test_config_saved_with_num_groups_still_loads(tmp_path):
    """Configs written before ``num_groups`` became ``norm_num_groups`` keep their value."""
    model = tiny(norm_num_groups=2)
    randomize_zero_inits(model)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_groups"] = config.pop("norm_num_groups")
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = SemanticUNet.from_pretrained(tmp_path)
    assert loaded.config.norm_num_groups == 2 and "num_groups" not in loaded.config
    assert SemanticUNet.from_config(loaded.config).config.norm_num_groups == 2
    x = torch.randn(1, 4, 4, 8, 8)
    cond = semantic_condition(torch.randint(0, 3, (1, 16, 32, 32)), 3)
    torch.testing.assert_close(loaded(x, 9, cond).sample, model(x, 9, cond).sample, atol=1e-5, rtol=1e-4)
    # the default (8 groups) would compute something else with the same weights
    default = SemanticUNet.from_config({k: v for k, v in loaded.config.items() if k != "norm_num_groups"})
    default.load_state_dict(model.state_dict())
    assert default.config.norm_num_groups == 8
    assert not torch.allclose(default(x, 9, cond).sample, model(x, 9, cond).sample, atol=1e-3)


def test_extra_condition_channels():
    """Extra float channels (edge maps) sit between the one-hot map and the null channel."""
    labels = torch.randint(0, 4, (2, 32, 32))
    edges = (torch.rand(2, 1, 32, 32) > 0.8).float()
    cond = semantic_condition(labels, 4, edges)
    assert cond.shape == (2, 6, 32, 32)
    assert torch.equal(cond[:, :4].argmax(1), labels) and torch.equal(cond[:, 4:5], edges) and not cond[:, 5].any()
    null = null_condition(cond)
    assert not null[:, :5].any() and null[:, 5].eq(1).all()  # the null condition zeroes the edges too
    with pytest.raises(ConfigError, match="extra condition"):
        semantic_condition(labels, 4, edges[:, :, :16])
    torch.manual_seed(0)
    model = SemanticUNet(
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
    randomize_zero_inits(model)
    x = torch.randn(2, 3, 8, 8)
    out = model(x, 5, cond).sample
    assert out.shape == x.shape
    assert not torch.allclose(out, model(x, 5, semantic_condition(labels, 4, 1 - edges)).sample)  # edges matter
    with pytest.raises(ConfigError, match="extra_condition_channels"):
        model(x, 5, semantic_condition(labels, 4))
    semantic_only = tiny(spatial_dims=2, num_classes=4)  # the default: no extra channels, so edges are refused
    with pytest.raises(ConfigError, match="channels"):
        semantic_only(torch.randn(2, 4, 8, 8), 5, cond)


def test_label_encoder_pools_an_image_resolution_map_to_the_latent_size():
    from medlsdm.models.blocks import LabelEncoder

    enc = LabelEncoder(3, in_channels=4, out_channels=6)
    assert enc(torch.rand(2, 4, 16, 32, 32), (4, 8, 8)).shape == (2, 6, 4, 8, 8)  # two pools: 4× down
    assert enc(torch.rand(2, 4, 4, 8, 8), (4, 8, 8)).shape == (2, 6, 4, 8, 8)  # already there: no pool
    assert LabelEncoder(2, 4, 6)(torch.rand(1, 4, 32, 32), (8, 8)).shape == (1, 6, 8, 8)


def encoded(label_encoder_channels=5, num_classes=3):
    torch.manual_seed(0)
    model = SemanticUNet(
        spatial_dims=3,
        in_channels=4,
        out_channels=4,
        num_classes=num_classes,
        channels=(8, 16),
        attention_levels=(False, True),
        norm_num_groups=4,
        num_heads=2,
        label_encoder_channels=label_encoder_channels,
    )
    randomize_zero_inits(model)
    return model


def test_label_encoder_feeds_the_spade_norms():
    """The condition reaches the SPADE norms only through the encoder, whose width sets their input."""
    from medlsdm.models.blocks import SPADE

    model = encoded(label_encoder_channels=5)
    x = torch.randn(2, 4, 4, 8, 8)
    labels = torch.randint(0, 3, (2, 16, 32, 32))
    out = model(x, 7, semantic_condition(labels, 3)).sample
    assert out.shape == x.shape
    other = semantic_condition((labels + 1) % 3, 3)
    assert not torch.allclose(out, model(x, 7, other).sample)  # the label map matters
    with torch.no_grad():  # negative control: an encoder that outputs zeros hides the label map
        model.label_encoder.convs[-1].weight.zero_()
        model.label_encoder.convs[-1].bias.zero_()
    torch.testing.assert_close(model(x, 7, semantic_condition(labels, 3)).sample, model(x, 7, other).sample)
    # parameters: the encoder's three convolutions (4 → 64 → 128 → 5, 3×3×3), and each SPADE's
    # first convolution (32 hidden channels) reads 5 channels instead of the 4 of the condition
    plain, n_spade = encoded(None), sum(isinstance(m, SPADE) for m in model.modules())
    assert n_spade == 12  # 2 per block: 2 middle blocks, 2 decoder levels × 2 blocks
    encoder = (4 * 64 * 27 + 64) + (64 * 128 * 27 + 128) + (128 * 5 * 27 + 5)
    assert model.num_parameters() - plain.num_parameters() == encoder + n_spade * (5 - 4) * 32 * 27


def test_label_encoder_round_trip_and_old_configs(tmp_path):
    model = encoded(label_encoder_channels=5)
    model.save_pretrained(tmp_path / "enc")
    loaded = SemanticUNet.from_pretrained(tmp_path / "enc")
    assert loaded.config.label_encoder_channels == 5
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    x, cond = torch.randn(1, 4, 4, 8, 8), semantic_condition(torch.randint(0, 3, (1, 16, 32, 32)), 3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, 9, cond).sample, model(x, 9, cond).sample, **SAME_WEIGHTS)
    # a model saved before the option (no key in its config) loads without an encoder
    tiny().save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["label_encoder_channels"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    old = SemanticUNet.from_pretrained(tmp_path / "old")
    assert old.config.label_encoder_channels is None and old.label_encoder is None
    with pytest.raises(ConfigError, match="label_encoder_channels"):
        SemanticUNet(conditioning="concat", label_encoder_channels=8)  # the encoder feeds SPADE norms only


def test_self_attention_is_softmax_attention_over_every_position():
    # against an explicit softmax(QK^T / sqrt(d)) V (independent of the scaled-dot-product kernel)
    from medlsdm.models.unet import SelfAttention

    torch.manual_seed(0)
    att = SelfAttention(3, 8, num_heads=2, num_groups=4)
    torch.nn.init.normal_(att.proj.weight)
    x = torch.randn(2, 8, 2, 3, 4)
    b, c, n, heads = 2, 8, 2 * 3 * 4, 2
    q, k, v = att.qkv(att.norm(x)).reshape(b, 3, heads, c // heads, n).unbind(1)  # (B, heads, d, N)
    weights = torch.softmax(q.transpose(-1, -2) @ k / (c // heads) ** 0.5, dim=-1)  # (B, heads, N, N)
    h = (weights @ v.transpose(-1, -2)).transpose(-1, -2).reshape(b, c, n)
    expected = x + att.proj(h.reshape(x.shape))
    torch.testing.assert_close(att(x), expected, rtol=1e-5, atol=1e-5)
