"""Regularizers by hand, lazy R1's expectation, and the engine's phases."""

import math

import pytest
import torch

from distgan import checkpoint, presets
from distgan.config import ConfigError, LossConfig
from distgan.engine import GANEngine
from distgan.regularizers import R1, GradientPenalty, LeCam, build_regularizers


def _cfg(**over):
    return presets.mnist_smoke().with_overrides({"train.batch_size": 8, **over})


def _batches(n, rows, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(rows, 1, 28, 28, generator=g) * 2 - 1, torch.randint(0, 10, (rows,), generator=g))
            for _ in range(n)]


def test_gradient_penalty_by_hand():
    gp = GradientPenalty(10.0)
    # D(x) = 1.5 |x|^2: gradient 3x, at x = (1, 1) norm 3*sqrt(2) -> penalty 10 * (3*sqrt(2) - 1)^2
    x = torch.ones(4, 2, requires_grad=True)
    value = gp.term(real_logits=None, fake_logits=None, extra=x, extra_logits=1.5 * (x ** 2).sum(1))
    assert math.isclose(value.item(), 10 * (3 * math.sqrt(2) - 1) ** 2, rel_tol=1e-6)
    value.backward()  # the double backward exists
    assert x.grad is not None


def test_gradient_penalty_interpolates_between_real_and_fake():
    real, fake = torch.zeros(3, 2), torch.ones(3, 2)
    u = torch.tensor([[0.25], [0.5], [1.0]])
    x = GradientPenalty(1.0).extra_input(real, fake, lambda n, *s: u[:n].view(n, *s))
    assert torch.allclose(x, 1 - u.expand(3, 2)) and x.requires_grad


def test_r1_equals_the_hand_computed_gradient_norm_on_a_tiny_d():
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    D = lambda x: torch.tanh(x @ w).sum(1)  # noqa: E731
    x = torch.tensor([[0.1, 0.2], [-0.3, 0.4], [0.0, -1.0]], requires_grad=True)
    # d/dx sum_j tanh((xW)_j) = W (1 - tanh^2(xW)), row by row
    grads = (1 - torch.tanh(x.detach() @ w) ** 2) @ w.T
    expected = 5.0 / 2 * grads.pow(2).sum(1).mean()
    got = R1(gamma=5.0, every=1).penalty(x, D(x))
    assert torch.allclose(got, expected, rtol=1e-6)
    got.backward()
    assert x.grad is not None  # differentiable: its gradient reaches D's weights in the Dreg step


def test_lazy_r1_gives_the_every_step_penalty_in_expectation():
    torch.manual_seed(0)
    w = torch.randn(4, 8)
    D = lambda x: torch.nn.functional.softplus(x @ w).sum(1)  # noqa: E731
    k, chunks = 4, 2000
    xs = torch.randn(chunks, 16, 4)
    every_step = lazy = 0.0
    for i, x in enumerate(xs):
        x = x.requires_grad_(True)
        p = R1(gamma=1.0, every=1).penalty(x, D(x)).item()
        every_step += p
        if i % k == 0:
            lazy += k * p  # what the engine applies: the penalty scaled by its interval
    assert lazy == pytest.approx(every_step, rel=0.02)
    assert lazy != every_step  # a sample of every k-th, not the same sum


def test_lecam_by_hand_and_its_moving_averages():
    lc = LeCam(weight=0.5, decay=0.9)
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-2.0, 0.0])
    first = lc.term(real_logits=real, fake_logits=fake)  # averages start at the first means: 2, -1
    assert math.isclose(first.item(), 0.5 * (((1 + 1) ** 2 + (3 + 1) ** 2) / 2 + ((-2 - 2) ** 2 + (0 - 2) ** 2) / 2))
    lc.term(real_logits=torch.tensor([0.0, 0.0]), fake_logits=torch.tensor([0.0, 0.0]))
    assert torch.allclose(lc.ema, torch.tensor([0.9 * 2, 0.9 * -1]))


def test_the_config_builds_the_regularizers_it_names():
    assert [r.name for r in build_regularizers(LossConfig())] == []
    regs = build_regularizers(LossConfig(kind="wgan-gp", r1_gamma=1.0, r1_every=8, lecam_weight=0.1))
    assert [(r.name, r.phase, r.every) for r in regs] == [("gp", "Dmain", 1), ("lecam", "Dmain", 1), ("r1", "Dreg", 8)]


@pytest.mark.parametrize("key,value", [("loss.r1_gamma", -1.0), ("loss.r1_every", 0), ("loss.lecam_weight", -0.1),
                                       ("loss.lecam_decay", 1.0), ("loss.kind", "lsgann")])
def test_bad_regularizer_keys_are_named(key, value):
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        _cfg(**{key: value})


def test_lazy_r1_takes_its_own_d_step_every_k_updates_and_corrects_adam():
    e = GANEngine.from_config(_cfg(**{"loss.r1_gamma": 1.0, "loss.r1_every": 4, "train.n_d": 2}))
    for x, y in _batches(4, 16):  # 8 D updates: R1 at updates 0 and 4
        s = e.step(x, y)
    d_steps = next(iter(e.opt_d.state.values()))["step"].item()
    assert d_steps == 8 + 2
    assert s["r1"] > 0
    c = 4 / 5  # StyleGAN2's lazy-regularization correction of D's Adam
    group = e.opt_d.param_groups[0]
    assert math.isclose(group["lr"], e.cfg.optim.lr_d * c) and math.isclose(group["betas"][1], 0.999 ** c)


def test_every_step_r1_keeps_adam_as_configured():
    e = GANEngine.from_config(_cfg(**{"loss.r1_gamma": 1.0, "loss.r1_every": 1}))
    e.step(*_batches(1, 8)[0])
    assert e.opt_d.param_groups[0]["betas"] == (0.5, 0.999)


def test_resume_is_exact_with_lazy_r1_lecam_and_ada(tmp_path):
    cfg = _cfg(**{"loss.r1_gamma": 1.0, "loss.r1_every": 3, "loss.lecam_weight": 0.3, "aug.kind": "ada",
                  "aug.ada_every": 1, "aug.ada_kimg": 0.1})
    data = _batches(6, 8)
    a = GANEngine.from_config(cfg)
    for x, y in data[:4]:
        a.step(x, y)
    a.aug_p = torch.tensor(0.5)  # mid-way: the masks of p draw from the stream too
    checkpoint.save(tmp_path / "c", a.state_dict(), cfg, {})
    state, _, _ = checkpoint.load(tmp_path / "c")
    b = GANEngine.from_config(cfg.with_overrides({"train.seed": 7}))
    b.load_state_dict(state)
    assert b.aug_p == 0.5  # ADA's p travels in the checkpoint
    for x, y in data[4:]:
        assert a.step(x, y) == b.step(x, y)
    assert all(torch.equal(u, v) for u, v in zip(a.state_dict()["D"].values(), b.state_dict()["D"].values()))
