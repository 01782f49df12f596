import pytest
import torch

from distgan import checkpoint, presets
from distgan.engine import GANEngine


def _batches(n, rows, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(rows, 1, 28, 28, generator=g) * 2 - 1, torch.randint(0, 10, (rows,), generator=g))
            for _ in range(n)]


def _cfg(**over):
    return presets.mnist_smoke().with_overrides({"train.batch_size": 8, **over})


@pytest.mark.parametrize("loss", ["ns", "wgan-gp"])
def test_resumed_engine_takes_bit_identical_steps(loss, tmp_path):
    cfg = _cfg(**{"loss.kind": loss, "train.n_d": 2, "model.sn_g": True})
    data = _batches(5, 16)
    a = GANEngine.from_config(cfg)
    for x, y in data[:3]:
        a.step(x, y)
    checkpoint.save(tmp_path / "ckpt", a.state_dict(), cfg, {})
    state, saved_cfg, _ = checkpoint.load(tmp_path / "ckpt")
    assert saved_cfg == cfg
    b = GANEngine.from_config(cfg.with_overrides({"train.seed": 99}))  # different init and noise
    b.load_state_dict(state)
    torch.manual_seed(1234)  # the global RNG is part of the state, whatever happened meanwhile
    for x, y in data[3:]:
        sa, sb = a.step(x, y), b.step(x, y)
        assert sa == sb
    for name in ("G", "D", "G_ema"):
        for (k, va), vb in zip(a.state_dict()[name].items(), b.state_dict()[name].values()):
            assert torch.equal(va, vb), f"{name}.{k} differs after resume"
    assert b.step_count == 5


def test_d_updates_n_d_times_per_generator_step():
    e = GANEngine.from_config(_cfg(**{"train.n_d": 3}))
    for x, y in _batches(2, 24):
        e.step(x, y)
    d_steps = next(iter(e.opt_d.state.values()))["step"].item()
    g_steps = next(iter(e.opt_g.state.values()))["step"].item()
    assert (d_steps, g_steps) == (6, 2)


def test_batch_must_split_into_n_d_chunks():
    e = GANEngine.from_config(_cfg(**{"train.n_d": 3}))
    with pytest.raises(ValueError, match="train.n_d=3"):
        e.step(*_batches(1, 16)[0])


def test_stats_report_probabilities_and_gradients():
    e = GANEngine.from_config(_cfg())
    s = e.step(*_batches(1, 8)[0])
    assert {"loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g", "nonfinite"} <= set(s)
    assert 0 < s["d_real"] < 1 and 0 < s["d_fake"] < 1
    assert s["grad_norm_d"] > 0 and s["grad_norm_g"] > 0 and s["nonfinite"] == 0


def test_wgan_gp_reports_its_penalty():
    s = GANEngine.from_config(_cfg(**{"loss.kind": "wgan-gp"})).step(*_batches(1, 8)[0])
    assert s["gp"] > 0


def test_non_finite_losses_are_flagged():
    x, y = _batches(1, 8)[0]
    x[0, 0, 0, 0] = float("nan")
    assert GANEngine.from_config(_cfg()).step(x, y)["nonfinite"] == 1.0


def test_ema_tracks_g_and_zero_decay_copies_it():
    data = _batches(20, 8)
    e = GANEngine.from_config(_cfg(**{"train.ema": 0.0}))
    for x, y in data:
        e.step(x, y)
    assert all(torch.equal(a, b) for a, b in zip(e.G_ema.state_dict().values(), e.G.state_dict().values()))
    e = GANEngine.from_config(_cfg(**{"train.ema": 0.99}))
    for x, y in data:
        e.step(x, y)
    w, w_ema = e.G.project[0].weight, e.G_ema.project[0].weight
    assert not torch.equal(w, w_ema) and (w - w_ema).abs().max() < 0.1


@pytest.mark.parametrize("preset", ["mnist_resnet_smoke", "mnist_stylegan2_smoke"])
def test_each_family_trains_and_resumes_bit_identically(preset, tmp_path):
    cfg = presets.get(preset).with_overrides({"train.batch_size": 8})
    data = _batches(4, 8)
    a = GANEngine.from_config(cfg)
    for x, y in data[:2]:
        s = a.step(x, y)
    assert all(torch.isfinite(v) for v in s.values()) and s["grad_norm_g"] > 0
    checkpoint.save(tmp_path / "c", a.state_dict(), cfg, {})
    state, _, _ = checkpoint.load(tmp_path / "c")
    b = GANEngine.from_config(cfg.with_overrides({"train.seed": 5}))
    b.load_state_dict(state)
    for x, y in data[2:]:
        assert a.step(x, y) == b.step(x, y)
    for name in ("G", "D", "G_ema"):
        for (k, va), vb in zip(a.state_dict()[name].items(), b.state_dict()[name].values()):
            assert torch.equal(va, vb), f"{name}.{k} differs after resume"
