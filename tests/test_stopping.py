import numpy as np

from distgan.config import StopConfig
from distgan.stopping import WatchRules, dominated, stop_reason, watch_reason


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


def w(fd, se=1.0, r_t=0.5, d_gap=0.0, **kw):
    return {"fd_lenet2k": fd, "fd_lenet2k_se": se, "r_t": r_t, "d_gap": d_gap, "diverged": 0.0, **kw}


def test_a_noisy_flat_run_plateaus_only_once_the_noise_margin_says_so():
    rules = WatchRules(patience=2, plateau_noise=1.0)
    # improving by 3 per evaluation against a standard error of 1: real progress, go on
    assert watch_reason([w(50), w(47), w(44)], "fd_lenet2k", rules) == ("", "")
    # flat within its noise (+-3): a recent low of 49 is no better than 50, whatever a relative rule says
    assert watch_reason([w(50, 3), w(49, 3), w(51, 3)], "fd_lenet2k", rules)[0] == "plateaued"
    assert stop_reason([h(50), h(49), h(51)], "fid2k", StopConfig(plateau_evals=2, plateau_delta=0.01), True) == ""
    # the same numbers measured precisely (+-0.1): a gain of 1 is real, go on
    assert watch_reason([w(50, 0.1), w(49, 0.1), w(51, 0.1)], "fd_lenet2k", rules) == ("", "")
    # a wider margin (z = 3) calls a gain of 3 at +-1 noise
    assert watch_reason([w(50), w(49), w(47)], "fd_lenet2k", WatchRules(patience=2, plateau_noise=3.0))[0] == "plateaued"
    assert watch_reason([w(50), w(49)], "fd_lenet2k", rules) == ("", "")  # not P evaluations past a best yet
    assert watch_reason([w(50, 3), w(49, 3), w(51, 3)], "fd_lenet2k", WatchRules(patience=0)) == ("", "")


def test_d_overfit_needs_r_t_high_the_gap_opened_and_the_distance_rising_beyond_noise():
    rules = WatchRules(patience=0, noise=1.0, overfit_r=0.6, gap_rise=0.05)
    start, best = w(60, 1.0, r_t=0.9, d_gap=0.02), w(30, 1.0, r_t=0.7, d_gap=0.3)
    worse = w(36, 1.0, r_t=0.8, d_gap=0.35)
    reason, why = watch_reason([start, best, worse], "fd_lenet2k", rules)
    assert reason == "d_overfit" and "d_gap 0.02 -> 0.35 (+-0; 0.30 at the best)" in why and "r_t 0.80" in why
    # any one sign missing: not overfitting
    assert watch_reason([start, best, {**worse, "r_t": 0.55}], "fd_lenet2k", rules) == ("", "")  # D unsure of reals
    assert watch_reason([start, best, {**worse, "d_gap": 0.2}], "fd_lenet2k", rules) == ("", "")  # gap closing
    assert watch_reason([start, best, {**worse, "d_gap": 0.27}], "fd_lenet2k", rules)[0] == "d_overfit"  # within 0.05
    flat = [{**h, "d_gap": 0.04} for h in (start, best, worse)]
    assert watch_reason(flat, "fd_lenet2k", rules) == ("", "")  # held-out reals judged as the trained ones
    assert watch_reason([start, best, {**worse, "fd_lenet2k": 31.0}], "fd_lenet2k", rules) == ("", "")  # within +-1.4
    assert watch_reason([start, best, {k: v for k, v in worse.items() if k != "d_gap"}], "fd_lenet2k", rules) == ("", "")
    assert watch_reason([start, {**best, "fd_lenet2k": 40.0}, worse], "fd_lenet2k", rules) == ("", "")  # the best is now
    assert watch_reason([start, w(1e4, diverged=1.0)], "fd_lenet2k", rules)[0] == "diverged"


def test_d_overfit_needs_the_gap_opened_beyond_its_own_noise():
    """Seen on small-data mnist (200 held-out digits): a trial stopped as d_overfit at its second
    evaluation, fd 2097 -> 2190, d_gap 0.01 -> 0.08, a rise within one standard error (+-0.058)."""
    rules = WatchRules(patience=0)  # noise 2, gap_rise 0.05
    first, second = w(2097, 1.9, r_t=0.99, d_gap=0.01, d_gap_se=0.058), w(2190, 1.9, r_t=1.0, d_gap=0.08, d_gap_se=0.058)
    assert watch_reason([first, second], "fd_lenet2k", rules) == ("", "")
    assert watch_reason([{**first, "d_gap_se": 0.0}, {**second, "d_gap_se": 0.0}], "fd_lenet2k", rules)[0] == "d_overfit"
    opened = {**second, "d_gap": 0.01 + 2 * np.hypot(0.058, 0.04) + 0.01, "d_gap_se": 0.04}  # beyond 2 combined se
    reason, why = watch_reason([first, opened], "fd_lenet2k", rules)
    assert reason == "d_overfit" and "(+-0.04;" in why


def test_a_rung_stops_only_trials_worse_than_its_cutoff_by_more_than_the_noise():
    recorded = [(30.0, 1.0), (40.0, 1.0), (50.0, 1.0), (60.0, 1.0)]  # cutoff of the top half: 45
    assert dominated(52.0, 1.0, recorded, 2, 1.0).startswith("best 52")
    assert dominated(46.0, 1.0, recorded, 2, 1.0) == ""  # 1 above the cutoff, within sqrt(2) standard errors
    assert dominated(46.0, 0.1, [(v, 0.1) for v, _ in recorded], 2, 1.0) != ""  # the same gap, measured precisely
    assert dominated(99.0, 1.0, [], 2, 1.0) == ""  # the first trial at a rung always goes on
