import pytest
import torch

from distgan.config import ConfigError, ModelConfig
from distgan.models import build_models
from distgan.models.stylegan2 import StyleGAN2Generator


@pytest.mark.parametrize("res, ch", [(28, 1), (32, 3), (64, 3)])
@pytest.mark.parametrize("conditional", [False, True])
def test_dcgan_shapes(res, ch, conditional):
    G, D = build_models(ModelConfig(resolution=res, channels=ch, z_dim=16, g_width=8, d_width=8,
                                    conditional=conditional, num_classes=10))
    y = torch.arange(4) % 10 if conditional else None
    x = G(torch.randn(4, 16), y)
    assert x.shape == (4, ch, res, res)
    assert x.abs().max() <= 1
    assert D(x, y).shape == (4,)


def test_projection_discriminator_uses_the_label():
    G, D = build_models(ModelConfig(conditional=True, g_width=8, d_width=8))
    x = torch.randn(3, 1, 28, 28)
    assert not torch.allclose(D(x, torch.tensor([0, 0, 0])), D(x, torch.tensor([1, 1, 1])))


def test_spectral_norm_is_switchable_per_network():
    def has_sn(m):
        return any(hasattr(layer, "parametrizations") for layer in m.modules())

    G, D = build_models(ModelConfig(sn_d=True, sn_g=False))
    assert has_sn(D) and not has_sn(G)
    G, D = build_models(ModelConfig(sn_d=False, sn_g=True))
    assert has_sn(G) and not has_sn(D)


def test_spectral_norm_bounds_the_largest_singular_value():
    _, D = build_models(ModelConfig(arch="mlp", resolution=2, sn_d=True, d_width=32))
    D.train()
    for _ in range(30):  # power iterations converge over forward passes
        D(torch.randn(8, 2))
    D.eval()
    w = D.net[0].weight
    assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=0.05)


def test_mlp_shapes():
    G, D = build_models(ModelConfig(arch="mlp", resolution=2, z_dim=8, g_width=16, d_width=16))
    x = G(torch.randn(5, 8))
    assert x.shape == (5, 2) and D(x).shape == (5,)


def _image_model(arch, res, ch, conditional, sn, attention=False):
    cfg = ModelConfig(arch=arch, resolution=res, channels=ch, z_dim=16, g_width=4, d_width=4,
                      conditional=conditional, cond="cbn" if arch == "resnet" else "concat", num_classes=10,
                      sn_d=sn, sn_g=sn and arch != "stylegan2", attention=attention)
    cfg.validate()
    return build_models(cfg)


@pytest.mark.parametrize("arch", ["resnet", "stylegan2"])
@pytest.mark.parametrize("res, ch", [(28, 1), (32, 3), (64, 3)])
@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("sn", [False, True])
def test_resnet_and_stylegan2_shapes_and_state_dicts_round_trip(arch, res, ch, conditional, sn):
    G, D = _image_model(arch, res, ch, conditional, sn)
    y = torch.arange(3) % 10 if conditional else None
    x = G(torch.randn(3, 16), y)
    assert x.shape == (3, ch, res, res) and x.abs().max() <= 1
    assert D(x, y).shape == (3,)
    G2, D2 = _image_model(arch, res, ch, conditional, sn)
    G2.load_state_dict(G.state_dict())
    D2.load_state_dict(D.state_dict())
    G.eval(), G2.eval(), D.eval(), D2.eval()
    z = torch.randn(2, 16)
    yy = y[:2] if y is not None else None
    assert torch.equal(G(z, yy), G2(z, yy)) and torch.equal(D(G(z, yy), yy), D2(G(z, yy), yy))


def test_resnet_self_attention_sits_at_half_the_side_and_starts_as_identity():
    G, D = _image_model("resnet", 32, 3, False, True, attention=True)
    seen = []
    G.attention.register_forward_hook(lambda m, i, o: seen.append((tuple(i[0].shape), torch.equal(i[0], o))))
    G(torch.randn(2, 16))
    assert seen == [((2, 4, 16, 16), True)]  # 32 px: at 16 x 16; gamma = 0 at init
    assert any(type(m).__name__ == "SelfAttention" for m in D.modules())


def test_conditional_resnet_uses_the_label_in_g_and_d():
    G, D = _image_model("resnet", 32, 3, True, False)
    G.eval()
    with torch.no_grad():  # CBN's class gains start at 1: move them so the label shows
        for m in G.modules():
            if type(m).__name__ == "CondBatchNorm2d":
                m.gain.weight.normal_(1, 0.5)
    z = torch.randn(2, 16).repeat(2, 1)
    x = G(z, torch.tensor([0, 0, 1, 1]))
    assert not torch.allclose(x[:2], x[2:])
    assert not torch.allclose(D(x[:2], torch.tensor([0, 0])), D(x[:2], torch.tensor([1, 1])))


def _style(**kw):
    return StyleGAN2Generator(32, 3, 16, 4, **kw)


def test_stylegan2_noise_input_and_style_mixing_come_from_the_given_noise():
    torch.manual_seed(0)
    G = _style(style_mixing=1.0)
    for layer in G.layers:
        torch.nn.init.constant_(layer.noise_strength, 0.5)
    z = torch.randn(2, 16)
    noise = torch.randn(2, G.noise_dim)
    G.train()
    a, b = G(z, noise=noise), G(z, noise=noise)
    assert torch.equal(a, b)  # all its randomness is in `noise`
    other = noise.clone()
    other[:, :16] = torch.randn(2, 16)  # another second z: mixing changes the later styles
    assert not torch.allclose(G(z, noise=other), a)
    G.eval()
    assert torch.equal(G(z), G(z))  # no noise given: the fixed maps, no mixing
    assert not torch.allclose(G(z), G(z, noise=noise))


def test_truncation_moves_w_to_its_running_mean():
    torch.manual_seed(0)
    G = _style()
    G.train()
    for _ in range(50):
        G(torch.randn(64, 16))  # training forwards track the mean of W
    assert G.w_avg.abs().sum() > 0
    G.eval()
    z = torch.randn(4, 16)
    at_mean = G(z, psi=0.0)
    assert torch.allclose(at_mean, at_mean[:1].expand_as(at_mean), atol=1e-6)  # every z: the mean style
    assert not torch.allclose(G(z, psi=1.0), at_mean)
    half = G(z, psi=0.5)
    assert (half - at_mean).abs().mean() < (G(z) - at_mean).abs().mean()


@pytest.mark.parametrize("over,match", [
    ({"arch": "stylegan2", "sn_g": True}, r"^model.sn_g: True is invalid, expected false for stylegan2"),
    ({"arch": "resnet", "conditional": True, "cond": "concat"}, r"^model.cond: 'concat' is invalid, expected cbn"),
    ({"arch": "resnet", "resolution": 48}, r"^model.resolution: 48 is invalid, expected one of \(28, 32, 64\)"),
    ({"arch": "stylegan", "resolution": 32}, r"^model.arch: 'stylegan'"),
    ({"arch": "stylegan2", "style_mixing": 1.5}, r"^model.style_mixing: "),
])
def test_bad_model_keys_are_named(over, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig(**over).validate()
