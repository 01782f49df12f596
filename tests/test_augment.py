"""DiffAugment's operations, their gradients, ADA's p, and rank-sliced randomness."""

import pytest
import torch

from distgan import presets
from distgan.augment import ada_step, augment, cutout, parse_policy, translation
from distgan.config import ConfigError
from distgan.engine import GANEngine
from distgan.models import build_models


def _const(value):
    return lambda n, *shape: torch.full((n, *shape), value)


def test_translation_moves_a_pixel_by_whole_pixels_and_pads_with_zero():
    x = -torch.ones(1, 1, 8, 8)
    x[0, 0, 3, 4] = 1.0
    # u = 0.99 -> the largest shift, +1 pixel (8 * 0.125) down and right: output (r, c) = input (r+1, c+1)
    out = translation(x, _const(0.99))
    assert out[0, 0, 2, 3] == 1.0 and (out == 1.0).sum() == 1
    assert (out[0, 0, -1, :] == 0).all() and (out[0, 0, :, -1] == 0).all()  # the border it revealed


def test_cutout_blanks_a_square_of_half_the_side():
    out = cutout(torch.ones(2, 3, 8, 8), _const(0.5))
    blank = out[0, 0] == 0
    assert blank.sum() == 16 and blank.any(0).sum() == 4 and blank.any(1).sum() == 4
    assert torch.equal(out[0], out[0, :1].expand(3, 8, 8))  # every channel alike


def test_gradients_reach_g_through_every_operation():
    cfg = presets.mnist_smoke()
    G, D = build_models(cfg.model)
    g = torch.Generator().manual_seed(0)
    draw = lambda n, *s: torch.rand(n, *s, generator=g)  # noqa: E731
    fake = G(torch.randn(4, cfg.model.z_dim), torch.arange(4))
    D(augment(fake, parse_policy("translation,cutout,color"), draw), torch.arange(4)).sum().backward()
    grads = [p.grad for p in G.parameters()]
    assert all(gr is not None for gr in grads) and sum(float(gr.abs().sum()) for gr in grads) > 0


def test_probability_zero_is_the_identity_and_one_always_augments():
    x = torch.rand(16, 1, 8, 8)
    g = torch.Generator().manual_seed(1)
    draw = lambda n, *s: torch.rand(n, *s, generator=g)  # noqa: E731
    assert torch.equal(augment(x, ["translation", "color"], draw, torch.tensor(0.0)), x)
    out = augment(x, ["color"], draw, torch.tensor(1.0))
    assert all(not torch.equal(a, b) for a, b in zip(out, x))


def test_ada_p_rises_above_target_and_falls_below():
    p = torch.tensor(0.5)
    assert ada_step(p, torch.tensor(0.9), 0.6, images=1000, kimg=10) == pytest.approx(0.6)
    assert ada_step(p, torch.tensor(0.2), 0.6, images=1000, kimg=10) == pytest.approx(0.4)
    assert ada_step(torch.tensor(0.0), torch.tensor(0.0), 0.6, 1000, 10) == 0.0  # clamped to [0, 1]
    assert ada_step(torch.tensor(1.0), torch.tensor(1.0), 0.6, 1000, 10) == 1.0


def test_the_engine_steers_p_by_the_r_t_of_the_reals_it_saw():
    cfg = presets.mnist_smoke().with_overrides({"aug.kind": "ada", "aug.ada_every": 1, "aug.ada_kimg": 1.0,
                                                "train.batch_size": 8})
    e = GANEngine.from_config(cfg)
    e.aug_p = torch.tensor(0.5)
    e.r_t_sum = torch.tensor([7.0, 8.0])  # r_t = 0.875 > 0.6
    e._adapt(100)
    assert e.aug_p == pytest.approx(0.5 + 100 / 1000) and e.r_t_sum.sum() == 0
    e.r_t_sum = torch.tensor([-8.0, 8.0])
    e._adapt(100)
    assert e.aug_p == pytest.approx(0.5)


def test_reals_and_fakes_go_through_the_same_policy_in_both_phases():
    cfg = presets.mnist_smoke().with_overrides({"aug.kind": "diffaug", "aug.policy": "translation,color",
                                                "train.batch_size": 8})
    e = GANEngine.from_config(cfg)
    seen = []
    inner = e.augment
    e.augment = lambda x: seen.append(x.requires_grad) or inner(x)
    e.step(torch.rand(8, 1, 28, 28) * 2 - 1, torch.arange(8) % 10)
    assert seen == [False, False, True]  # D's reals, D's (detached) fakes, G's fakes with their gradient
    assert e.aug_ops == ["translation", "color"]


def test_two_ranks_augment_their_slices_exactly_as_one_process_augments_the_global_batch():
    cfg = presets.mnist_smoke().with_overrides({"aug.kind": "ada"})
    x = torch.rand(8, 1, 28, 28)
    one = GANEngine.from_config(cfg)
    one.aug_p = torch.tensor(0.5)
    ranks = [GANEngine(cfg, *build_models(cfg.model), rank=r, world_size=2) for r in (0, 1)]
    for e in ranks:
        e.aug_p = torch.tensor(0.5)
    out = torch.cat([e.augment(x[4 * e.rank:4 * (e.rank + 1)]) for e in ranks])
    assert torch.equal(out, one.augment(x)) and not torch.equal(out, x)


@pytest.mark.parametrize("over,match", [
    ({"aug.kind": "adaa"}, r"^aug.kind: "),
    ({"aug.policy": "translation,flip"}, r"^aug.policy: 'translation,flip': expected"),
    ({"aug.target": 1.0}, r"^aug.target: "),
    ({"aug.kind": "ada", "loss.kind": "wgan-gp"}, r"^aug.kind: ada steers"),
])
def test_bad_augmentation_keys_are_named(over, match):
    with pytest.raises(ConfigError, match=match):
        presets.mnist_smoke().with_overrides(over)


def test_points_refuse_image_augmentation():
    with pytest.raises(ConfigError, match=r"^aug.kind: diffaug augments images"):
        presets.ring8().with_overrides({"aug.kind": "diffaug"})


def test_the_small_data_sweep_samples_valid_configs_of_augmentation_and_regularization():
    from pathlib import Path

    import optuna

    from distgan import sweep

    base = presets.mnist_smoke()
    found = sweep.load(Path(__file__).resolve().parent.parent / "tune_spaces" / "small-data.yaml", base)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    kinds = set()
    for _ in range(30):
        params = found.sample(study.ask(), base.flat())
        cfg = base.with_overrides(params)  # every sampled config validates
        kinds.add(cfg.aug.kind)
        assert ("aug.target" in params) == (cfg.aug.kind == "ada")
        assert 0.01 <= cfg.loss.r1_gamma <= 10.0
    assert kinds == {"none", "diffaug", "ada"}
