"""The pure parts of sampling from a registered generator: latents, labels, slerp."""

import pytest
import torch

from distgan.config import ConfigError
from distgan.latent import Latent
from distgan.model_registry import sample_latents, slerp
from distgan.tracking import check_uri


def test_slerp_ends_at_both_latents_and_keeps_the_norm_of_gaussian_latents():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(512, generator=g), torch.randn(512, generator=g)
    path = slerp(a, b, torch.linspace(0, 1, 9))
    assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)
    # a straight line would dip to ~0.71 of the norm halfway; the great circle stays near it
    assert path.norm(dim=1).min() > 0.95 * min(a.norm(), b.norm())
    assert (a + b).norm() / 2 < 0.8 * a.norm()


def test_class_rows_one_label_and_interpolation_rows():
    zy, per_row = sample_latents(Latent(8), k=10, n=30, label=None, interpolate=None, steps=0, seed=0)
    assert zy.shape == (30, 9) and per_row == 3
    assert zy[:, 8].tolist() == [float(c) for c in range(10) for _ in range(3)]
    zy, _ = sample_latents(Latent(8), 10, 16, label=7, interpolate=None, steps=0, seed=0)
    assert (zy[:, 8] == 7).all() and zy.shape == (16, 9)
    zy, per_row = sample_latents(Latent(8), 10, 0, label=None, interpolate=(1, 2), steps=5, seed=0)
    assert zy.shape == (50, 9) and per_row == 5
    assert torch.equal(zy[:5, :8], zy[5:10, :8])  # every class row walks the same latents
    zy, per_row = sample_latents(Latent(8), 0, 64, label=None, interpolate=None, steps=0, seed=0)
    assert zy.shape == (64, 8) and per_row == 8  # unconditional: no label column
    a, _ = sample_latents(Latent(8), 0, 4, None, None, 0, seed=3)
    b, _ = sample_latents(Latent(8), 0, 4, None, None, 0, seed=3)
    assert torch.equal(a, b)


@pytest.mark.parametrize("k, label, message", [(10, 10, "has 10 classes"), (0, 1, "not conditional")])
def test_bad_label_is_named(k, label, message):
    with pytest.raises(ConfigError, match=message):
        sample_latents(Latent(8), k, 4, label=label, interpolate=None, steps=0, seed=0)


def test_tracking_uri_must_be_a_server_or_sqlite():
    assert check_uri("sqlite:////tmp/x.db") and check_uri("http://127.0.0.1:5000")
    with pytest.raises(ConfigError, match="file store"):
        check_uri("./mlruns")


def test_truncation_resamples_z_within_two_psi_and_psi_one_is_none():
    from distgan.model_registry import truncate_z

    z = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    t = truncate_z(z, 0.5, seed=0)
    assert t.abs().max() <= 1.0 and torch.equal(t[z.abs() <= 1.0], z[z.abs() <= 1.0])
    assert torch.equal(truncate_z(z, 1.0, seed=0), z)
    zy, _ = sample_latents(Latent(8), 0, 16, None, None, 0, seed=0, psi=0.25)
    assert zy.abs().max() <= 0.5


@pytest.mark.parametrize("arch", ["dcgan", "resnet", "stylegan2"])
def test_each_family_exports_for_the_registry_and_stylegan2_truncates_in_w(arch):
    from distgan.config import ModelConfig
    from distgan.metrics.evaluate import fixed_latents
    from distgan.model_registry import Sampler, sampler_input
    from distgan.models import build_models

    cfg = ModelConfig(arch=arch, resolution=32, channels=3, z_dim=16, g_width=4, d_width=4, conditional=True,
                      cond="cbn" if arch == "resnet" else "concat")
    G, _ = build_models(cfg)
    G.train()
    for _ in range(5):
        G(torch.randn(16, 16), torch.arange(16) % 10)  # BatchNorm statistics, W's mean
    model = Sampler(G.eval(), 16, True).eval()
    assert model.truncates == (arch == "stylegan2")
    z, y = fixed_latents(4, 16, 10, 0)
    example = sampler_input(z, y, 1.0 if model.truncates else None)
    program = torch.export.export(model, (example,)).module()  # what serialization_format="pt2" stores
    with torch.no_grad():
        assert torch.allclose(program(example), model(example), atol=1e-5)
        if model.truncates:
            same_class = sampler_input(z, torch.zeros(4, dtype=torch.long), 0.0)
            out = program(same_class)
            assert torch.allclose(out, out[:1].expand_as(out), atol=1e-5)  # psi 0: the mean style for every z
