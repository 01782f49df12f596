"""InfoGAN codes: the latent layout, the mutual-information loss, the Q head in every family,
the controllability metric on images whose attributes are known, and the --vary layout."""

import math

import pytest
import torch

from distgan import presets
from distgan.config import ConfigError, ModelConfig
from distgan.engine import GANEngine
from distgan.latent import Latent, vary_latents
from distgan.metrics.control import (
    CodedGenerator,
    attributes,
    controllability,
    matched_accuracy,
    spearman,
)
from distgan.model_registry import sample_latents
from distgan.models import build_models
from distgan.models.layers import QHead


def test_latent_layout_codes_in_range_one_hot_category_and_no_codes_draws_as_before():
    lat = Latent(4, codes=2, categories=3)
    x = lat.seeded(500, 0)
    assert x.shape == (500, 9) and lat.q_width == 7
    _, c, k = lat.split(x)
    assert c.min() >= -1 and c.max() <= 1 and c.std() > 0.5  # U(-1, 1): std 0.58
    assert torch.equal(x[:, 6:].sum(1), torch.ones(500)) and set(k.tolist()) == {0, 1, 2}
    assert torch.equal(Latent(4).seeded(5, 7), torch.randn(5, 4, generator=torch.Generator().manual_seed(7)))


def test_info_nll_equals_the_hand_computed_gaussian_nll_and_cross_entropy():
    lat = Latent(1, codes=2, categories=3)
    latent = torch.tensor([[0.3, 0.5, -0.2, 0.0, 1.0, 0.0], [1.1, -0.9, 0.4, 0.0, 0.0, 1.0]])
    q = torch.tensor([[0.4, -0.1, 0.0, math.log(0.5), 2.0, 1.0, 0.0],
                      [-1.0, 0.4, math.log(2.0), 0.0, 0.0, 0.0, 3.0]])
    expected = 0.0
    for row, (c, k) in enumerate([((0.5, -0.2), 1), ((-0.9, 0.4), 2)]):
        for i in range(2):
            mu, sigma = q[row, i].item(), math.exp(q[row, 2 + i].item())
            expected += math.log(sigma) + (c[i] - mu) ** 2 / (2 * sigma ** 2) + 0.5 * math.log(2 * math.pi)
        logits = q[row, 4:].tolist()
        expected += -(logits[k] - math.log(sum(math.exp(v) for v in logits)))
    assert lat.info_nll(q, latent).item() == pytest.approx(expected / 2, rel=1e-6)


@pytest.mark.parametrize("arch", ["dcgan", "resnet", "stylegan2", "mlp"])
def test_every_family_has_a_q_head_outside_spectral_norm(arch):
    image = arch != "mlp"
    cfg = ModelConfig(arch=arch, resolution=32 if image else 2, channels=3, z_dim=8, g_width=4, d_width=4,
                      codes=2, code_categories=4, style_mixing=0.0, sn_d=True)
    G, D = build_models(cfg)
    assert G.z_dim == 14
    x = G(torch.randn(5, 14))
    logits, q = D(x, codes=True)
    assert logits.shape == (5,) and q.shape == (5, 8) and D(x).shape == (5,)
    heads = [m for m in D.modules() if isinstance(m, QHead)]
    assert len(heads) == 1 and not any(hasattr(m, "parametrizations") for m in heads[0].modules())
    assert any(hasattr(m, "parametrizations") for m in D.modules())  # the rest of D is normalized


def test_codes_are_validated_by_key():
    for key, value, message in [("model.codes", -1, "model.codes"), ("model.code_categories", 1, "model.code_categories"),
                                ("loss.info_weight", -0.5, "loss.info_weight")]:
        with pytest.raises(ConfigError, match=message):
            presets.mnist_smoke().with_overrides({key: value})
    with pytest.raises(ConfigError, match="model.style_mixing"):
        presets.get("mnist_stylegan2_smoke").with_overrides({"model.codes": 2})
    with pytest.raises(ConfigError, match="model.attention"):
        presets.mnist_smoke().with_overrides({"model.attention": True})


def _coded_engine(weight=1.0, **over):
    cfg = presets.mnist_smoke().with_overrides({"train.batch_size": 8, "model.codes": 2, "model.code_categories": 3,
                                                "loss.info_weight": weight, **over})
    return GANEngine.from_config(cfg)


def test_the_info_term_trains_q_in_d_step_and_g_in_its_step():
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    y = torch.arange(8) % 10
    e = _coded_engine()
    s = e.step(x, y)
    assert s["info_nll"] > 0 and s["info_d"] > 0
    assert all(p.grad is not None for p in e.D.q.parameters())  # Q is in D's optimizer and its step
    # G's gradient moves with lambda: the MI term reaches G (D's weights as D left them)
    grads = []
    for weight in (0.0, 1.0):
        e = _coded_engine(weight)
        e.step(x, y)
        grads.append(float(e.step(x, y)["grad_norm_g"]))
    assert grads[0] != pytest.approx(grads[1], rel=1e-3)


def test_coded_engine_with_lazy_r1_keeps_every_parameter_in_the_backward():
    e = _coded_engine(**{"loss.r1_gamma": 1.0, "loss.r1_every": 1})
    e.step(torch.rand(8, 1, 28, 28) * 2 - 1, torch.arange(8) % 10)
    assert "r1" in e.reg_stats and all(p.grad is not None for p in e.D.parameters())


def _bar(width: float, shear: float, side: int = 28) -> torch.Tensor:
    """A vertical stroke of the given width, sheared by `shear` pixels per row: [-1, 1]."""
    rows = torch.arange(side, dtype=torch.float32)[:, None]
    cols = torch.arange(side, dtype=torch.float32)[None, :]
    centre = side / 2 + shear * (rows - side / 2)
    img = ((cols - centre).abs() <= width / 2) & (rows >= 4) & (rows < side - 4)
    return img.float()[None] * 2 - 1


def _render(shuffle: bool):
    """G stand-in: c1 sets the stroke width, c2 its slant; shuffled, each image gets another
    row's value at random, so no order survives."""
    lat = Latent(3, codes=2)
    g = torch.Generator().manual_seed(0)

    def render(latents, y):
        _, c, _ = lat.split(latents)
        if shuffle:
            c = c[torch.randperm(len(c), generator=g)]
        return torch.stack([_bar(2 + 3 * (a + 1), 0.3 * b) for a, b in c.tolist()])

    return CodedGenerator(render, lat, 0)


def test_controllability_finds_width_and_slant_and_nothing_when_shuffled():
    m = controllability(_render(shuffle=False))
    assert m["info_rho_c1_ink"] > 0.95 and m["info_rho_c1_width"] > 0.9
    assert m["info_rho_c2_slant"] > 0.95 and m["info_rho_c2_ink"] < 0.5
    assert m["info_rho_c1"] > 0.95 and m["info_rho"] > 0.95
    s = controllability(_render(shuffle=True))
    assert s["info_rho_c1_ink"] < 0.25 and s["info_rho_c2_slant"] < 0.25


def test_attributes_and_rank_correlation_by_hand():
    a = attributes(torch.stack([_bar(3, 0.0), _bar(7, 0.0), _bar(3, 0.5)]))
    assert a[1, 0] > 2 * a[0, 0]  # ink grows with width
    assert abs(a[0, 1]) < 1e-3 and a[2, 1] == pytest.approx(0.5, abs=0.05)  # slant: the shear
    assert a[0, 2] == 20 and a[0, 3] in (3, 4)  # bounding box height and width
    values = torch.tensor([0.0, 1.0, 2.0, 3.0])
    attrs = torch.tensor([[1.0, 2.0, 2.0, 5.0], [4.0, 3.0, 2.0, 1.0]])[:, :, None]  # a tie, and a descent
    assert spearman(values, attrs).item() == pytest.approx((0.9486833 - 1.0) / 2, abs=1e-5)


def test_matched_accuracy_is_the_best_one_to_one_matching():
    codes = torch.tensor([0, 0, 1, 1, 2, 2])
    assert matched_accuracy(codes, torch.tensor([5, 5, 3, 3, 7, 7])) == 1.0
    assert matched_accuracy(codes, torch.tensor([5, 5, 5, 5, 7, 7])) == pytest.approx(4 / 6)


def test_vary_grid_layout_rows_fixed_z_columns_sweep_one_code():
    lat = Latent(4, codes=2, categories=3)
    zs = vary_latents(lat, 2, rows=5, steps=7, seed=0)
    grid = zs.view(5, 7, -1)
    assert torch.equal(grid[:, :, :4], grid[:, :1, :4].expand(-1, 7, -1))  # each row one z
    assert torch.allclose(grid[0, :, 5], torch.linspace(-2, 2, 7)) and (grid[:, :, 4] == 0).all()
    assert grid[:, 0, 6:].argmax(1).tolist() == [0, 1, 2, 0, 1]  # the category per row
    zy, per_row = sample_latents(lat, 10, 64, None, None, 7, 0, vary=1)
    assert per_row == 7 and zy.shape == (70, 10)  # one row per class, then the label column
    assert zy[:, -1].view(10, 7).eq(torch.arange(10.0)[:, None]).all()
    zy, _ = sample_latents(lat, 0, 21, None, None, 7, 0, vary=1)
    assert zy.shape == (21, 9)  # unconditional: n // steps rows
    for code, message in [(3, "c1..c2"), (0, "c1..c2")]:
        with pytest.raises(ConfigError, match=message):
            sample_latents(lat, 0, 21, None, None, 7, 0, vary=code)
    with pytest.raises(ConfigError, match="no continuous codes"):
        sample_latents(Latent(4), 0, 21, None, None, 7, 0, vary=1)


def test_evaluation_reports_control_and_the_grid_shows_the_sweeps(tmp_path):
    from PIL import Image

    from distgan.data import prepare
    from distgan.data.schema import inspect
    from distgan.metrics.evaluate import Evaluator
    from distgan.plots import VARY_STEPS, sample_grid

    cfg = presets.mnist_smoke().with_overrides({"model.codes": 2, "model.code_categories": 3})
    prepare.mnist_embedded(tmp_path / "data")
    e = GANEngine.from_config(cfg)
    m = Evaluator.build(cfg, inspect(str(tmp_path / "data")), "cpu", cache_dir=str(tmp_path / "stats"))(e.G_ema)
    assert {"info_rho", "info_rho_c1", "info_rho_c2_slant", "info_acc"} <= set(m)
    assert 0 <= m["info_rho"] <= 1 and 0 < m["info_acc"] <= 1
    path = sample_grid(e.G_ema, "dcgan", 40, tmp_path / "grid.png", torch.device("cpu"), latent=e.latent)
    w, h = Image.open(path).size
    tile = 28 + 2
    assert (w, h) == (VARY_STEPS * tile + 2, (2 * 10 + 1) * tile + 2)  # 2 codes x 10 classes, one dark row
