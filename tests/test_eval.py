"""Evaluation: metric names that say what they measure, the registry's opt-in metrics, and
the numbers against outside references (clean-fid's KID, the `prdc` package)."""

import contextlib
import io
import re

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from distgan import presets, tracking
from distgan.cli import main
from distgan.data import prepare
from distgan.data.schema import inspect
from distgan.engine import GANEngine
from distgan.metrics import registry
from distgan.metrics.evaluate import Evaluator
from distgan.metrics.kid import kid
from distgan.metrics.prdc import prdc


def test_names_carry_the_feature_space_and_the_protocol():
    assert registry.fd_name("inception", 10000) == "fid10k" and registry.kd_name("inception", 50000) == "kid50k"
    assert registry.fd_name("lenet-mnist", 2000) == "fd_lenet2k" and registry.fd_name("coords", 500) == "fd_coords500"
    assert registry.kd_name("lenet-mnist", 2000) == "kd_lenet2k"
    # a record written before the names carried their space reads under today's names
    old = {"fid2k": 3.0, "kid2k": 0.1, "kid2k_std": 0.01, "fid_best": 2.5, "step": 10}
    assert registry.upgrade(old, "lenet-mnist") == {"fd_lenet2k": 3.0, "kd_lenet2k": 0.1, "kd_lenet2k_std": 0.01,
                                                    "fd_best": 2.5, "step": 10}
    assert registry.upgrade({"fid10k": 1.0}, "inception") == {"fid10k": 1.0}  # Inception's were right all along


def test_opt_in_metrics_run_only_at_their_period(mnist_dir):
    cfg = presets.mnist_smoke().with_overrides({"eval.metrics": ["fd", "modes", "kd@2", "prdc@3"]})
    assert registry.parse(cfg.eval.metrics) == {"fd": 1, "modes": 1, "kd": 2, "prdc": 3}
    evaluator = Evaluator.build(cfg, inspect(str(mnist_dir)), torch.device("cpu"))
    G = GANEngine.from_config(cfg).G_ema
    keys = {i: set(evaluator(G, index=i)) for i in (1, 2, 3, 6)}
    assert "fd_lenet500" in keys[1] and "classes_covered" in keys[1]
    assert "kd_lenet500" not in keys[1] and "precision_lenet500" not in keys[1]  # neither is due
    assert "kd_lenet500" in keys[2] and "precision_lenet500" not in keys[2]
    assert "precision_lenet500" in keys[3] and "kd_lenet500" not in keys[3]
    assert {"kd_lenet500", "precision_lenet500", "coverage_lenet500"} <= keys[6]
    assert {"kd_lenet500", "recall_lenet500"} <= set(evaluator(G))  # no index (promotion, fid): all of them
    # the default: the distance, coverage and the codes' control (nothing without codes), nothing quadratic
    assert registry.parse(presets.mnist().eval.metrics) == {"fd": 1, "modes": 1, "control": 1}
    assert not any(k.startswith("info_") for k in keys[1])


def test_kid_and_prdc_equal_their_outside_references():
    from cleanfid.fid import kernel_distance
    from prdc import compute_prdc

    g = torch.Generator().manual_seed(0)
    real = torch.randn(600, 64, generator=g).double()
    fake = (torch.randn(600, 64, generator=g) * 1.2 + 0.1).double()
    ours, _ = kid(real, fake, num_subsets=1, subset_size=600)  # the whole set: both draw the same samples
    ref = kernel_distance(real.numpy(), fake.numpy(), num_subsets=1, max_subset_size=600)
    assert ours == pytest.approx(ref, rel=1e-6)
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints its sample counts
        expected = compute_prdc(real.numpy(), fake.numpy(), nearest_k=5)
    got = prdc(real, fake, k=5)
    for key in ("precision", "recall", "density", "coverage"):
        assert got[key] == pytest.approx(float(expected[key]), abs=1e-9), key
    assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1  # a case where every term is informative


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_inception_run_logs_fid_and_a_lenet_run_never_does(mlflow_server, mnist_dir, tmp_path):
    folder = tmp_path / "images" / "dots"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    prepare.image_folder(tmp_path / "images", str(tmp_path / "rgb"), size=32, channels=3)
    common = ["--no-progress", "--mlflow-uri", mlflow_server, "--experiment", "names", "--set", "train.steps=4",
              "--set", "train.eval_every=2", "--set", "train.batch_size=8", "--set", "eval.num_samples=20",
              "--set", "eval.batch_size=20"]
    assert main(["train", "--preset", "mnist_smoke", "--out", str(tmp_path / "lenet"), "--set", f"data.path={mnist_dir}",
                 *common]) == 0
    assert main(["train", "--preset", "cifar10_dcgan", "--out", str(tmp_path / "inception"), "--set",
                 f"data.path={tmp_path / 'rgb'}", "--set", "model.g_width=8", "--set", "model.d_width=8",
                 "--set", "model.num_classes=1", "--set", "model.conditional=false", *common]) == 0
    c = MlflowClient(mlflow_server)
    runs = {r.data.tags[tracking.RUN_DIR].rsplit("/", 1)[-1]: r
            for r in c.search_runs([c.get_experiment_by_name("names").experiment_id])}
    lenet, inception = set(runs["lenet"].data.metrics), set(runs["inception"].data.metrics)
    assert "fd_lenet20" in lenet and not any(k.startswith(("fid", "kid")) for k in lenet)
    assert "fid20" in inception and not any(re.match(r"(fd|kd)_[a-z]+\d", k) for k in inception)
    assert "fd_best" in inception  # the objective's name is the same for every feature space


def test_critic_probe_reads_the_order_of_ds_scores_as_2_auc_minus_1():
    """d_gap is 2 AUC - 1 of D's scores, training against held-out reals (scipy's rank-sum
    AUC, ties counting half), and a shift of all of D's outputs does not move it."""
    from scipy.stats import rankdata

    from distgan.metrics.evaluate import CriticProbe

    class Score(torch.nn.Module):  # D(x) = the one pixel's value + an offset
        def __init__(self, offset: float):
            super().__init__()
            self.offset = offset

        def forward(self, x, y=None):
            return x.flatten(1)[:, 0] + self.offset

    rng = np.random.default_rng(0)
    train = np.round(rng.normal(0.4, 1.0, 300), 1)  # rounded: ties between the sets
    held = np.round(rng.normal(0.0, 1.0, 300), 1)
    probe = CriticProbe(*((torch.tensor(v).view(-1, 1, 1, 1), torch.zeros(len(v), dtype=torch.long))
                          for v in (train, held)))
    ranks = rankdata(np.concatenate([train, held]))
    auc = (ranks[:300].sum() - 300 * 301 / 2) / 300 ** 2
    out = probe(Score(0.0), conditional=False, batch=64)
    assert out["d_gap"] == pytest.approx(2 * auc - 1) and 0.1 < out["d_gap"] < 0.4
    assert out["r_train"] == pytest.approx(np.sign(train).mean())
    shifted = probe(Score(-3.0), conditional=False, batch=64)
    assert shifted["d_gap"] == pytest.approx(out["d_gap"]) and shifted["r_train"] < -0.9


def test_the_gaps_standard_error_is_the_spread_of_d_gap_over_fresh_probes():
    """Hanley & McNeil's standard error of 2 AUC - 1 against d_gap measured on 2,000 fresh
    draws of the two sets, where D cannot tell them apart and where it can."""
    from distgan.metrics.evaluate import gap_se

    rng = np.random.default_rng(0)
    assert gap_se(0.0, 200, 200) == pytest.approx(2 * np.sqrt(401 / (12 * 200 * 200)))  # the rank-sum null: 0.058
    for shift in (0.0, 1.0):
        train, held = rng.normal(shift, 1.0, (2000, 100)), rng.normal(0.0, 1.0, (2000, 100))
        gaps = np.sign(train[:, :, None] - held[:, None, :]).mean(axis=(1, 2))
        assert gap_se(float(gaps.mean()), 100, 100) == pytest.approx(gaps.std(), rel=0.1), shift
    assert gap_se(1.0, 50, 50) == 0.0  # every training real above every held-out one
