from distgan.config import StopConfig
from distgan.stopping import stop_reason


def h(fid, d_real=0.7, d_fake=0.3, **kw):
    return {"fid2k": fid, "d_real": d_real, "d_fake": d_fake, "nonfinite": 0.0, "diverged": 0.0, **kw}


def test_non_finite_is_diverged_at_once():
    assert stop_reason([h(50), h(40, nonfinite=1.0)], "fid2k", StopConfig(), True) == "diverged"
    assert stop_reason([h(1e4, diverged=1.0)], "fid2k", StopConfig(), True) == "diverged"
    assert stop_reason([h(2e5)], "fid2k", StopConfig(), True) == "diverged"  # finite, but blown up
    assert stop_reason([h(float("nan"))], "fid2k", StopConfig(), True) == "diverged"


def test_exploded_losses_are_diverged_even_when_finite_and_fid_looks_fine():
    # seen: WGAN-GP at lr 50 after 100 steps, loss_d 6e11 while fid2k read 88.7
    assert stop_reason([h(88.7, loss_d=6.25e11, loss_g=3.1e12)], "fid2k", StopConfig(), False) == "diverged"
    assert stop_reason([h(88.7, loss_d=-2e6, loss_g=0.5)], "fid2k", StopConfig(), False) == "diverged"
    assert stop_reason([h(88.7, loss_d=1.2, loss_g=-3e3)], "fid2k", StopConfig(), False) == ""
    assert stop_reason([h(88.7, loss_d=6.25e11)], "fid2k", StopConfig(max_loss=0), False) == ""


def test_saturated_d_for_k_evaluations_is_diverged_for_probabilistic_losses_only():
    sat = [h(90, 0.999, 0.001)] * 3
    cfg = StopConfig(saturation_evals=3)
    assert stop_reason([h(100), *sat[:2]], "fid2k", cfg, True) == ""
    assert stop_reason([h(100), *sat], "fid2k", cfg, True) == "diverged"
    assert stop_reason([h(100), *sat], "fid2k", cfg, False) == ""  # hinge/wgan logits are no probabilities


def test_plateau_needs_a_relative_improvement_within_p_evaluations():
    cfg = StopConfig(plateau_evals=2, plateau_delta=0.05)
    assert stop_reason([h(100), h(99), h(98)], "fid2k", cfg, True) == "plateaued"
    assert stop_reason([h(100), h(99), h(90)], "fid2k", cfg, True) == ""
    assert stop_reason([h(100), h(99)], "fid2k", cfg, True) == ""  # not enough history yet
    assert stop_reason([h(100), h(99), h(98)], "fid2k", StopConfig(plateau_evals=0), True) == ""
