"""Does spectral normalization on D make more hyperparameter settings good? (Kurach et al.
2019, "A Large-Scale Study of Regularization and Normalization in GANs", found that it does.)
The same grid (learning rate x n_D x loss, 16 configurations) trained with model.sn_d true and
false, on ring8 and at the mnist_smoke size; the distribution of each configuration's best
distance, as a table and a box plot.

    .venv/bin/python bench/sn_study.py [--problems ring8 mnist] [--out docs/sn_study.png]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ray  # noqa: E402
import ray.tune  # noqa: E402

from distgan import presets  # noqa: E402
from distgan.data import prepare  # noqa: E402
from distgan.tuning import OBJECTIVE  # noqa: E402
from hpo_efficiency import trial  # noqa: E402  (bench/ is on sys.path when run as a script)

GRID = {"optim.lr_g": [1e-4, 3e-4, 1e-3, 3e-3], "train.n_d": [1, 2], "loss.kind": ["ns", "hinge"]}
PROBLEMS = {
    # name: (preset, overrides)
    "ring8": ("ring8", {"data.num_points": 8000, "train.steps": 1200, "train.eval_every": 200,
                        "stop.saturation_evals": 0, "stop.max_loss": 0.0}),
    "mnist": ("mnist_smoke", {"train.steps": 600, "train.eval_every": 100, "eval.num_samples": 2000,
                              "stop.saturation_evals": 0, "stop.max_loss": 0.0}),
}


def study(problem: str, tmp: str) -> dict[bool, list[float]]:
    preset, over = PROBLEMS[problem]
    base = presets.get(preset).with_overrides(over)
    data_dir = f"{tmp}/data-{problem}"
    (prepare.mixture("ring8", data_dir, n=over["data.num_points"]) if preset == "ring8"
     else prepare.mnist_embedded(data_dir))
    space = {k: ray.tune.grid_search(v) for k, v in GRID.items()}
    space["optim.lr_d"] = ray.tune.sample_from(lambda spec: spec.config["optim.lr_g"])  # one learning rate
    space["model.sn_d"] = ray.tune.grid_search([True, False])
    trainable = ray.tune.with_resources(ray.tune.with_parameters(
        trial, base=base.to_dict(), data_dir=data_dir, cache=f"{tmp}/stats", population=False), {"CPU": 1})
    results = ray.tune.Tuner(trainable, param_space=space,
                             tune_config=ray.tune.TuneConfig(metric=OBJECTIVE, mode="min", max_concurrent_trials=2),
                             run_config=ray.tune.RunConfig(name=f"sn-{problem}", storage_path=tmp, verbose=0)).fit()
    out: dict[bool, list[float]] = {True: [], False: []}
    for r in results:
        df = r.metrics_dataframe
        out[bool(r.config["model.sn_d"])].append(float(df[OBJECTIVE].min()) if df is not None and len(df) else 1e4)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    p.add_argument("--out", default="docs/sn_study.png")
    a = p.parse_args()
    n = len(list(itertools.product(*GRID.values())))
    ray.init(address="local", num_cpus=2, log_to_driver=False)
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for problem in a.problems:
            found[problem] = study(problem, tmp)
    fig, axes = plt.subplots(1, len(found), figsize=(4 * len(found), 3.6), dpi=100, squeeze=False)
    for ax, (problem, by_sn) in zip(axes[0], found.items()):
        preset, over = PROBLEMS[problem]
        best = min(min(v) for v in by_sn.values())
        print(f"\n{problem} ({preset}, {over['train.steps']} steps, {n} configurations per arm: lr {GRID['optim.lr_g']}, "
              f"n_D {GRID['train.n_d']}, loss {GRID['loss.kind']})")
        print(f"{'sn_d':<6} {'median':>10} {'q25':>10} {'q75':>10} {'best':>10} {'worst':>10} {'within 2x of best':>18}")
        for sn in (True, False):
            v = sorted(by_sn[sn])
            q = statistics.quantiles(v, n=4)
            good = sum(x <= 2 * best for x in v)
            print(f"{str(sn):<6} {statistics.median(v):>10.4g} {q[0]:>10.4g} {q[2]:>10.4g} {v[0]:>10.4g} {v[-1]:>10.4g} "
                  f"{f'{good}/{len(v)}':>18}")
        ax.boxplot([by_sn[True], by_sn[False]], tick_labels=["SN on D", "no SN"])
        ax.set_yscale("log")
        ax.set_title(f"{problem}: best distance of {n} configurations", fontsize=9)
        ax.set_ylabel("best Fréchet distance (log)")
    fig.tight_layout()
    fig.savefig(a.out)
    print(f"\nbox plot: {a.out}")


if __name__ == "__main__":
    main()
