"""Which scheduler finds the better GAN for the same compute: distgan's watch + Optuna's TPE,
ASHA + TPE, PBT, PB2 and full-budget random search, side by side in one run, at equal compute
(the same total training steps), over paired seeds, on ring8 and on the `mnist` preset at a CPU size.

    .venv/bin/python bench/hpo_efficiency.py [--problems ring8 mnist] [--seeds 0 1 2 3 4] [--methods ...]
    .venv/bin/python bench/hpo_efficiency.py --cpus 1 --methods watch --save w.jsonl &   # two at once
    .venv/bin/python bench/hpo_efficiency.py --cpus 1 --methods asha --save a.jsonl
    .venv/bin/python bench/hpo_efficiency.py --report w.jsonl a.jsonl                   # their table

Give a bench its cores alone: a --cpus 2 bench beside another (4 torch threads on 2 cores)
trained each trial at ~150 img/s where alone it trained ~1,000.

Equal compute: random search and the population methods train `--trials` trials for the
whole budget each (PBT and PB2 spend the same steps, moving state from the best trials to
the worst instead of stopping anyone; they decide synchronously here, so a seed gives one
number, not one that depends on timing); ASHA and watch stop trials early, so they keep
sampling new trials until they have spent the same number of steps, one trial at a time on
the bench's CPUs (`--cpus`; two side by side race to each rung, and which one reports first
changed the decisions: the same seed gave two numbers). Trials train in-process (distgan's
engine, loop and evaluator, a thread per CPU they hold; no TorchTrainer): this measures the
search and the stopping, not the distributed trainer. Printed per problem and method: the
median, the interquartile range and the range over seeds of the best distance found, the
evaluations (= steps / eval_every) used, and the wall time; then each method against ASHA +
TPE on the same seeds: the median of the per-seed ratios of best distances and the
two-sided Wilcoxon signed-rank p-value (with 5 seeds, 0.0625 is the smallest there is:
every seed on one side), and the compute (evaluations, in the order the driver received
them) each spent to first reach ASHA's best on that seed, as a fraction of what ASHA spent
to find it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import statistics
import tempfile
import time
from pathlib import Path

import optuna
import ray
import ray.tune
import torch
import yaml
from ray.tune.schedulers import AsyncHyperBandScheduler
from ray.tune.search.optuna import OptunaSearch
from ray.tune.stopper import Stopper

from distgan import checkpoint, presets, sweep
from distgan.config import ConfigError, RunConfig
from distgan.data import prepare
from distgan.data.reader import epoch_batches, load_all
from distgan.engine import GANEngine
from distgan.launch import fd_key
from distgan.loop import evals_at, train
from distgan.metrics.evaluate import Evaluator
from distgan.trial import EVALS
from distgan.tuning import OBJECTIVE, build_scheduler

# Searched: the learning rates and Adam's beta1 (continuous, so PB2 can model them) and n_D.
SPACE = {"params": {"optim.lr_g": {"dist": "loguniform", "low": 3.0e-5, "high": 3.0e-3},
                    "optim.lr_d": {"dist": "loguniform", "low": 3.0e-5, "high": 3.0e-3},
                    "optim.beta1": {"dist": "uniform", "low": 0.0, "high": 0.9},
                    "train.n_d": {"dist": "choice", "values": [1, 2]}}}
PROBLEMS = {
    # name: (preset, overrides, trials, steps, eval_every)
    "ring8": ("ring8", {"data.num_points": 8000, "stop.saturation_evals": 0, "eval.num_samples": 2000}, 8, 1200, 200),
    "mnist": ("mnist", {"stop.saturation_evals": 0, "eval.num_samples": 2000}, 6, 1200, 200),
    # 1,000 digits (800 to train on, 200 held out), trained long enough for D to overfit them
    "mnist-small": ("mnist", {"stop.saturation_evals": 0, "eval.num_samples": 2000}, 6, 3000, 250),
}
SMALL_DIGITS = 1000
METHODS = ("watch", "asha", "pbt", "pb2", "random")
ORDERED = ("watch", "asha")  # methods whose decisions depend on the order results arrive in
CPUS = 2  # this machine's; --cpus 1 runs a bench in one core, so two (one per method) run side by side
WATCH = sweep.SchedulerSpec(kind="watch", grace_period=1, reduction_factor=3)  # ASHA's rungs, with noise margins


def trial(params: dict, base: dict, data_dir: str, cache: str, population: bool, threads: int) -> None:
    torch.set_num_threads(threads)
    cfg = RunConfig.from_dict(base).with_overrides(params)
    x, y, info = load_all(data_dir, raw=True)
    engine = GANEngine.from_config(cfg)
    history: list[dict] = []
    restored = ray.tune.get_checkpoint()
    if restored is not None:  # a PBT/PB2 exploit (or a restart): the donor's state
        with restored.as_directory() as d:
            state, _, _ = checkpoint.load(d)
        engine.load_state_dict(state)
    evaluator = Evaluator.build(cfg, info, torch.device("cpu"), cache_dir=cache)
    batches = epoch_batches(x, y, cfg.train.batch_size * cfg.train.n_d, cfg.train.seed, start=engine.step_count)

    def on_eval(metrics: dict) -> None:
        metrics = {**metrics, EVALS: float(evals_at(engine.step_count, cfg.train.eval_every))}
        if not population:
            ray.tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = checkpoint.save(Path(tmp) / "c", engine.state_dict(), cfg, metrics)
            ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(str(path)))

    train(engine, batches, cfg, evaluator, on_eval, progress=False, history=history)


class Budget(Stopper):
    """Stops everything once the trials together have spent `evals` evaluations' worth of steps;
    keeps each evaluation's distance in the order the driver received them (the compute spent)."""

    def __init__(self, evals: int, per_trial: int, key: str):
        self.left, self.per_trial, self.key = evals, per_trial, key
        self.seen: list[float] = []

    def __call__(self, trial_id: str, result: dict) -> bool:
        self.left -= 1
        self.seen.append(float(result.get(self.key, float("inf"))))
        return result.get(EVALS, 0) >= self.per_trial

    def stop_all(self) -> bool:
        return self.left <= 0


def run(method: str, problem: str, seed: int, tmp: str, watch: sweep.SchedulerSpec = WATCH, total: int = CPUS) -> dict:
    preset, over, trials, steps, eval_every = PROBLEMS[problem]
    base = presets.get(preset).with_overrides({**over, "train.steps": steps, "train.eval_every": eval_every,
                                                "train.seed": seed})
    per_trial = evals_at(steps, eval_every)
    data_dir = f"{tmp}/data-{problem}"
    if not Path(data_dir).is_dir():
        if problem == "mnist-small":
            x, y = prepare.mnist_embedded_arrays()
            rows = prepare.shuffled_order(len(x))[:SMALL_DIGITS]
            prepare.write_shards(data_dir, "mnist-embedded", "uint8", 10, [im.tobytes() for im in x[rows]], y[rows],
                                 (28, 28, 1), heldout=0.2)
        elif preset == "ring8":
            prepare.mixture("ring8", data_dir, n=over["data.num_points"])
        else:
            prepare.mnist_embedded(data_dir)
    space_file = Path(tmp) / "space.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    found = sweep.load(space_file, base)
    population = method in ("pbt", "pb2")
    # ASHA's and watch's decisions depend on the order results arrive in: two trials side by
    # side race to a rung (a seed gave two numbers), so they run one at a time, on the bench's
    # CPUs. A second thread speeds these small convolutions little: one trial on 2 threads
    # trained ~1,000 img/s, two benches at --cpus 1 side by side ~630 each (1.26x together)
    cpus = total if method in ORDERED else 1
    trainable = ray.tune.with_resources(ray.tune.with_parameters(
        trial, base=base.to_dict(), data_dir=data_dir, cache=f"{tmp}/stats", population=population, threads=cpus),
        {"CPU": cpus})
    budget = trials * per_trial
    tune_config = {"metric": OBJECTIVE, "mode": "min", "max_concurrent_trials": total // cpus}
    param_space = None
    stopper = Budget(budget, per_trial, fd_key(base))
    name = f"{problem}-{method}-{seed}"
    if method in ("asha", "watch"):  # as many trials as the budget pays for
        searcher = OptunaSearch(space=functools.partial(found.sample, base=base.flat()), metric=OBJECTIVE, mode="min",
                                sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=4))
        scheduler = (AsyncHyperBandScheduler(time_attr=EVALS, max_t=per_trial, grace_period=1, reduction_factor=3)
                     if method == "asha" else
                     build_scheduler(watch, found, per_trial, fd_key(base), f"{tmp}/{name}"))
        tune_config.update(num_samples=10 * trials, search_alg=searcher, scheduler=scheduler)
    else:
        param_space = {p.key: p.tune_domain() for p in found.params}
        spec = sweep.SchedulerSpec(kind=method if population else "none", perturbation_interval=1, synch=population)
        if population:  # PBT/PB2 rank on the current distance, their own metric (Tune refuses a second)
            del tune_config["metric"], tune_config["mode"]
        tune_config.update(num_samples=trials, search_alg=ray.tune.search.BasicVariantGenerator(random_state=seed),
                           scheduler=build_scheduler(spec, found, per_trial, fd_key(base)))
    keep = ray.tune.CheckpointConfig(num_to_keep=5) if population else None
    t0 = time.perf_counter()
    results = ray.tune.Tuner(trainable, param_space=param_space, tune_config=ray.tune.TuneConfig(**tune_config),
                             run_config=ray.tune.RunConfig(name=name, storage_path=tmp,
                                                           stop=stopper, checkpoint_config=keep, verbose=0)).fit()
    wall = time.perf_counter() - t0
    key = next(k for k in results[0].metrics_dataframe if k.startswith(("fd_", "fid")) and not k.endswith("std"))
    frames = [r.metrics_dataframe for r in results if r.metrics_dataframe is not None and key in r.metrics_dataframe]
    return {"best": min(float(df[key].min()) for df in frames), "evals": sum(len(df) for df in frames),
            "budget": budget, "trials": len(frames), "wall": wall, "key": key, "seen": stopper.seen}


def spent_to(seen: list[float], target: float) -> float:
    """The evaluations a run had spent when it first found a distance <= target (inf: never)."""
    return next((i + 1.0 for i, fd in enumerate(seen) if fd <= target), float("inf"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--save", metavar="FILE", help="append each run (its distances in the order found) as a JSON line")
    p.add_argument("--watch", nargs="+", default=[], metavar="KEY=VALUE",
                   help="watch's rules other than the defaults, e.g. patience=5 noise=3 (sweep.SchedulerSpec)")
    p.add_argument("--cpus", type=int, default=CPUS, choices=range(1, CPUS + 1),
                   help="the cores this bench uses: 1 leaves the other to a second bench (say, ASHA beside watch)")
    p.add_argument("--report", nargs="+", metavar="FILE",
                   help="run nothing: the tables of the runs these --save files hold, on the seeds they share")
    a = p.parse_args()
    if a.report:
        print(report(a.report))
        return
    watch = {k: yaml.safe_load(v) for k, _, v in (w.partition("=") for w in a.watch)}
    unknown = set(watch) - ({f.name for f in dataclasses.fields(sweep.SchedulerSpec)} - {"kind"})
    if unknown:
        p.error(f"--watch {', '.join(sorted(unknown))}: not a rule of sweep.SchedulerSpec")
    try:  # a bad value is refused here, as in a sweep file, not by the first watch run
        spec = dataclasses.replace(WATCH, **watch).validate("--watch ")
    except ConfigError as e:
        p.error(str(e))
    if watch:
        print(f"watch rules: {watch}", flush=True)
    ray.init(address="local", num_cpus=a.cpus, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        for problem in a.problems:
            rows: dict[str, list[dict]] = {m: [] for m in a.methods}
            for s in a.seeds:  # each run's line as it ends: a long bench cut short keeps whole seeds
                for m in a.methods:
                    r = run(m, problem, s, tmp, spec, a.cpus)
                    rows[m].append(r)
                    print(f"{problem} {m} seed {s}: best {r['key']} {r['best']:.4g} after "
                          f"{spent_to(r['seen'], r['best']):.0f} of {r['evals']} evaluations, "
                          f"{r['trials']} trials, {r['wall']:.0f} s", flush=True)
                    if a.save:
                        with open(a.save, "a") as f:
                            f.write(json.dumps({"problem": problem, "method": m, "seed": s, **r}) + "\n")
            print(summary(problem, rows, a.seeds), flush=True)


def summary(problem: str, rows: dict[str, list[dict]], seeds: list[int]) -> str:
    """The table of one problem: each method's median, IQR and range over seeds, then each
    method paired against ASHA + TPE (`rows`: method -> runs, in the order of `seeds`)."""
    preset, _, trials, steps, eval_every = PROBLEMS[problem]
    key = next(iter(rows.values()))[0]["key"]
    lines = [f"\n{problem} ({preset} preset, {trials} trials x {steps} steps, an evaluation every {eval_every}; "
             f"equal compute: {trials * evals_at(steps, eval_every)} evaluations; seeds {seeds})",
             f"{'method':<8} {'median ' + key:>18} {'IQR':>22} {'range':>22} {'evals used':>11} {'trials':>7} "
             f"{'wall s':>7}"]
    for m, runs in rows.items():
        best = [r["best"] for r in runs]
        q1, _, q3 = statistics.quantiles(best, n=4, method="inclusive") if len(best) > 1 else best * 3
        lines.append(f"{m:<8} {statistics.median(best):>18.4g} {f'{q1:.4g} - {q3:.4g}':>22} "
                     f"{f'{min(best):.4g} - {max(best):.4g}':>22} "
                     f"{statistics.median([r['evals'] for r in runs]):>11.0f} "
                     f"{statistics.median([r['trials'] for r in runs]):>7.0f} "
                     f"{statistics.median([r['wall'] for r in runs]):>7.0f}")
        lines.append("         per seed: " + ", ".join(f"{r['best']:.4g}" for r in runs))
    if "asha" in rows and len(rows) > 1:
        lines.append(paired(rows, "asha"))
    return "\n".join(lines)


def report(files: list[str]) -> str:
    """The tables of runs saved with --save (by any number of bench runs, in any order): per
    problem, the seeds every method saved there (the last run saved of a problem, method and
    seed counts)."""
    saved: dict[str, dict[str, dict[int, dict]]] = {}
    for f in files:
        for line in Path(f).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                saved.setdefault(r["problem"], {}).setdefault(r["method"], {})[r["seed"]] = r
    out = []
    for problem, by_method in saved.items():
        methods = [m for m in METHODS if m in by_method]
        seeds = sorted(set.intersection(*(set(by_method[m]) for m in methods)))
        if seeds:
            out.append(summary(problem, {m: [by_method[m][s] for s in seeds] for m in methods}, seeds))
    return "\n".join(out)


def paired(rows: dict[str, list[dict]], against: str) -> str:
    """Each method against `against` on the same seeds: the median per-seed ratio of best
    distances (< 1: better) and the two-sided Wilcoxon signed-rank p-value; and the compute
    it spent to reach `against`'s best on that seed, as a fraction of what `against` spent
    (inf: never reached)."""
    from scipy.stats import wilcoxon

    base = rows[against]
    lines = [f"paired against {against} (same seeds): median ratio of best distances, Wilcoxon signed-rank p; "
             f"compute to reach {against}'s best, as a fraction of {against}'s"]
    for m, runs in rows.items():
        if m == against:
            continue
        best, base_best = [r["best"] for r in runs], [r["best"] for r in base[:len(runs)]]
        ratios = [b / a for a, b in zip(base_best, best)]
        p = wilcoxon(best, base_best).pvalue if len(best) > 1 and best != base_best else 1.0
        spent = [spent_to(r["seen"], a["best"]) / spent_to(a["seen"], a["best"]) for a, r in zip(base, runs)]
        lines.append(f"{m:<8} ratio {statistics.median(ratios):.3f}  p {p:.3g}  per seed: "
                     + ", ".join(f"{r:.2f}" for r in ratios))
        lines.append(f"{'':<8} compute to reach it: median {statistics.median(spent):.2f}  per seed: "
                     + ", ".join(f"{c:.2f}" for c in spent))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
