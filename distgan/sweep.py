"""A search space file as a whole sweep (as W&B sweeps and Katib experiments are): the
parameters and their distributions, starting points, and optionally the budget (trials,
steps, eval_every) and the scheduler with its settings. The command line overrides the
file. Everything is validated against the config schema before Ray starts, and every error
names the file and the key.

The first objective is fixed: a trial is as good as its lowest Fréchet distance (`fd_best`)
in the feature space of its evaluation protocol. A file may name a second one to trade
against it (`objectives: {fd: min, info_rho: max}`): its value at the trial's best-distance
checkpoint (the one promotion would take). Optuna's multi-objective TPE then searches for the
Pareto front; the schedulers still stop trials on the distance alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from distgan.config import FIXED_ON_RESUME, ConfigError, RunConfig

DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
#: Model keys that change no tensor of the state: an exploit may move them.
KEEP_TENSORS = ("model.d_input_gain", "model.style_mixing")


def lineage_fixed(key: str) -> bool:
    """A key a PBT/PB2 exploit may not change: it shapes the model's tensors (`sn_d` adds a
    parametrization, a width resizes) or what its numbers mean, so the donor's state would
    not fit. Drawn once per trial, then inherited with the donor's state."""
    return key.startswith(FIXED_ON_RESUME) and key not in KEEP_TENSORS
SCHEDULERS = ("watch", "asha", "hyperband", "median", "pbt", "pb2", "none")
POPULATION = ("pbt", "pb2")  # schedulers that move state between trials (Tune checkpoints)
#: What a second objective may be, and what the run must compute for it (its stem; the
#: precision/recall family carries the feature space in its logged name, e.g. recall_lenet2k).
SECOND_OBJECTIVES = ("info_rho", "info_acc", "recall", "precision", "density", "coverage", "classes_covered",
                     "modes_covered")
PRDC = ("recall", "precision", "density", "coverage")


@dataclass(frozen=True)
class Objective:
    """The second objective: its logged metric name and direction."""
    metric: str
    mode: str

    @property
    def worst(self) -> float:
        """What an evaluation that did not measure the metric (a diverged one) counts as."""
        return 0.0 if self.mode == "max" else 1e4

    @property
    def at_best(self) -> str:
        """What a trial reports: the metric at its best-distance evaluation."""
        return f"{self.metric}_at_best"

    def dominates(self, a: tuple[float, float], b: tuple[float, float]) -> bool:
        """(distance, metric) a is no worse than b in both and better in one."""
        sign = 1 if self.mode == "max" else -1
        no_worse = a[0] <= b[0] and sign * a[1] >= sign * b[1]
        return no_worse and (a[0] < b[0] or sign * a[1] > sign * b[1])


@dataclass
class Param:
    key: str
    dist: str
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None
    when: dict[str, Any] = field(default_factory=dict)

    def suggest(self, trial) -> Any:
        """One value from an Optuna trial (define-by-run)."""
        if self.dist == "loguniform":
            return trial.suggest_float(self.key, self.low, self.high, log=True)
        if self.dist == "uniform":
            return trial.suggest_float(self.key, self.low, self.high)
        if self.dist == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        return trial.suggest_categorical(self.key, self.values)

    def distribution(self):
        import optuna

        if self.dist in ("loguniform", "uniform"):
            return optuna.distributions.FloatDistribution(self.low, self.high, log=self.dist == "loguniform")
        if self.dist == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high))
        return optuna.distributions.CategoricalDistribution(self.values)

    def tune_domain(self):
        """The same distribution as a Tune domain (for searcher-less schedulers: PBT, PB2)."""
        import ray.tune

        if self.dist == "loguniform":
            return ray.tune.loguniform(self.low, self.high)
        if self.dist == "uniform":
            return ray.tune.uniform(self.low, self.high)
        if self.dist == "int":
            return ray.tune.randint(int(self.low), int(self.high) + 1)
        return ray.tune.choice(self.values)

    @property
    def continuous(self) -> bool:
        return self.dist in ("loguniform", "uniform")

    def clip(self, value: Any) -> Any:
        if self.dist == "int":
            return int(min(max(round(value), self.low), self.high))
        if self.continuous:
            return float(min(max(value, self.low), self.high))
        return value


@dataclass
class SchedulerSpec:
    kind: str = "watch"
    """watch + Optuna's TPE: on the HPO bench (docs/benchmarks.md) level with ASHA + TPE on
    mnist, ahead of it on three of ten small-data seeds and behind on one (a lower median
    there), ahead of PB2 on mnist, and on small-data mnist behind PB2's three good seeds by at
    most 1.84x where PB2's two bad ones are 5.7x and 10.7x behind it (PB2 was the default
    until it was measured there)."""
    grace_period: int = 1
    """asha/hyperband/median/watch: evaluations before a trial may be stopped."""
    reduction_factor: int = 3
    """asha/hyperband/watch: 1/rf of the trials go on at each rung (3: what the bench measured)."""
    perturbation_interval: int = 2
    """pbt/pb2: evaluations between exploit/explore decisions."""
    quantile_fraction: float = 0.25
    """pbt/pb2: the bottom share that copies the top share."""
    resample_probability: float = 0.25
    """pbt: chance that explore resamples a value instead of perturbing it."""
    synch: bool = False
    """pbt/pb2: decide once every trial has reached the interval (the early ones pause), not
    against the others' last decision points: for a small population running side by side,
    where an asynchronous decision compares a trial with one an interval behind it."""
    patience: int = 5
    """watch: evaluations without an improvement beyond the noise before a trial has plateaued (0: never)."""
    noise: float = 2.0
    """watch: d_overfit and dominated need the distance worse by this many combined standard errors
    (and d_overfit, d_gap opened by as many of its own)."""
    plateau_noise: float = 1.0
    """watch: an improvement beyond this many combined standard errors is progress."""
    overfit_r: float = 0.6
    """watch: the r_t = E sign D(x_real) above which D is too sure of the reals."""
    gap_rise: float = 0.05
    """watch: how far d_gap must have opened (above its lowest) to count as D overfitting."""

    def rules(self):
        from distgan.stopping import WatchRules

        return WatchRules(self.patience, self.noise, self.plateau_noise, self.overfit_r, self.gap_rise)

    def validate(self, where: str) -> "SchedulerSpec":
        if self.kind not in SCHEDULERS:
            raise ConfigError(f"{where}scheduler {self.kind!r}: expected one of {SCHEDULERS}")
        # each bound is read only once its value is known to be a number (a YAML string is not)
        checks = [("grace_period", lambda v: v >= 1, ">= 1"), ("reduction_factor", lambda v: v >= 2, ">= 2"),
                  ("perturbation_interval", lambda v: v >= 1, ">= 1"),
                  ("quantile_fraction", lambda v: 0 < v <= 0.5, "in (0, 0.5]"),
                  ("resample_probability", lambda v: 0 <= v <= 1, "in [0, 1]"),
                  ("patience", lambda v: v >= 0 and float(v).is_integer(), "a whole number >= 0"),
                  ("noise", lambda v: v >= 0, ">= 0"), ("plateau_noise", lambda v: v >= 0, ">= 0"),
                  ("overfit_r", lambda v: -1 <= v <= 1, "in [-1, 1]"),
                  ("gap_rise", lambda v: 0 <= v <= 2, "in [0, 2]")]
        if not isinstance(self.synch, bool):
            raise ConfigError(f"{where}scheduler.synch: {self.synch!r} is invalid, expected true or false")
        for key, ok, expected in checks:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
                raise ConfigError(f"{where}scheduler.{key}: {value!r} is invalid, expected {expected}")
        return self


@dataclass
class Budget:
    trials: int | None = None
    steps: int | None = None
    eval_every: int | None = None


@dataclass
class Sweep:
    path: str
    params: list[Param]
    start: list[dict[str, Any]]
    budget: Budget
    scheduler: SchedulerSpec | None
    """None: the file names no scheduler (the command line's, or the default, applies)."""
    objective: Objective | None = None
    """The second objective (None: the distance alone)."""

    def sample(self, trial, base: dict[str, Any]) -> dict[str, Any]:
        """Define-by-run: a conditional parameter is drawn only when its condition holds."""
        out: dict[str, Any] = {}
        for p in self.params:
            if all(out.get(k, base.get(k)) == v for k, v in p.when.items()):
                out[p.key] = p.suggest(trial)
        return out

    def mutations(self) -> dict[str, Any]:
        """What PBT may perturb on exploit: every key but the lineage-fixed ones."""
        found = {p.key: (p.values if p.dist == "choice" else p.tune_domain()) for p in self.params
                 if not lineage_fixed(p.key)}
        if not found:
            raise ConfigError(f"space {Path(self.path).name}: pbt has nothing to explore (every key shapes the model "
                              "and is fixed per lineage)")
        return found

    def log_keys(self) -> tuple[str, ...]:
        """The continuous keys PB2 explores in log space."""
        return tuple(p.key for p in self.params if p.dist == "loguniform" and not lineage_fixed(p.key))

    def bounds(self) -> dict[str, list[float]]:
        """PB2's search box: it models only continuous keys (the choices come from the donor)."""
        found = {p.key: [p.low, p.high] for p in self.params if p.continuous and not lineage_fixed(p.key)}
        if not found:
            raise ConfigError(f"space {Path(self.path).name}: pb2 needs at least one continuous parameter "
                              "(loguniform or uniform); for a space of choices pass --scheduler asha")
        return found


def load(path: str | Path, base: RunConfig, text: str | None = None) -> Sweep:
    """Parse and validate a sweep file (or its stored `text`) against the config schema."""
    path = Path(path)
    if text is None:
        if not path.is_file():
            raise ConfigError(f"--space {path}: no such file")
        text = path.read_text()

    def bad(msg: str) -> ConfigError:
        return ConfigError(f"space {path.name}: {msg}")

    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise bad(f"not valid YAML{where} ({getattr(e, 'problem', None) or type(e).__name__})") from None
    if not isinstance(raw, dict):
        raise bad("expected a mapping with params (and optionally start, budget, scheduler)")
    for gone in ("metric", "mode"):
        if gone in raw:
            raise bad(f"{gone}: not a setting (distgan minimizes the run's Fréchet distance, fd_best; a second "
                      "objective goes in objectives: {fd: min, info_rho: max})")
    unknown = set(raw) - {"params", "start", "budget", "scheduler", "objectives"}
    if unknown:
        raise bad(f"unknown top-level key {sorted(unknown)[0]!r}")
    flat = base.flat()
    params = [_param(key, spec, flat, base, bad) for key, spec in (_mapping(raw.get("params"), "params", bad)).items()]
    if not params:
        raise bad("params: the space is empty")
    start = raw.get("start") or []
    if not isinstance(start, list):
        raise bad("start: expected a list of {key: value} points")
    searched = {p.key for p in params}
    for i, point in enumerate(start):
        try:
            base.with_overrides(_mapping(point, "start", bad))
        except ConfigError as e:
            raise bad(f"start: {e}") from None
        for key in point:
            if key not in searched:  # the searcher would drop it: the trial would run without it
                raise bad(f"start[{i}].{key}: not a key of params (a starting point sets searched keys; "
                          "fix the others with --set)")
    budget = Budget(**_fields(raw.get("budget"), Budget, "budget", bad))
    for key in ("trials", "steps", "eval_every"):
        value = getattr(budget, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise bad(f"budget.{key}: {value!r} is invalid, expected a whole number >= 1")
    scheduler = None
    if raw.get("scheduler") is not None:
        spec = raw["scheduler"]
        spec = {"kind": spec} if isinstance(spec, str) else spec
        scheduler = SchedulerSpec(**_fields(spec, SchedulerSpec, "scheduler", bad)).validate(f"space {path.name}: ")
    objective = _objective(raw.get("objectives"), base, bad)
    if objective is not None and scheduler is not None and scheduler.kind in POPULATION:
        raise bad(f"objectives: two objectives need Optuna's search, which {scheduler.kind} does not use; "
                  "pick asha, hyperband, median or none")
    return Sweep(str(path), params, start, budget, scheduler, objective)


def _objective(raw: Any, base: RunConfig, bad) -> Objective | None:
    """`{fd: min}` or `{fd: min, <metric>: min|max}`, checked against what the runs compute."""
    if raw is None:
        return None
    entries = list(_mapping(raw, "objectives", bad).items())
    if not entries or entries[0] != ("fd", "min") or len(entries) > 2:
        raise bad("objectives: expected {fd: min} first, then at most one more (e.g. {fd: min, info_rho: max})")
    if len(entries) == 1:
        return None
    stem, mode = entries[1]
    if stem not in SECOND_OBJECTIVES:
        raise bad(f"objectives.{stem}: not a metric to trade against the distance; expected one of {SECOND_OBJECTIVES}")
    if mode not in ("min", "max"):
        raise bad(f"objectives.{stem}: {mode!r} is invalid, expected min or max")
    from distgan.metrics import registry
    from distgan.metrics.detectors import resolve_name

    schedule = registry.parse(base.eval.metrics)
    m = base.model
    if stem.startswith("info_"):
        need = "codes" if stem == "info_rho" else "code_categories"
        if not getattr(m, need) or "control" not in schedule:
            raise bad(f"objectives.{stem}: the runs measure no codes (set model.{need} and keep control in "
                      "eval.metrics)")
    if stem in PRDC:
        if schedule.get("prdc") != 1:
            raise bad(f"objectives.{stem}: the runs do not compute it at every evaluation (add prdc to eval.metrics)")
        return Objective(stem + registry.space_tag(resolve_name(base.eval.detector, m.sample_shape),
                                                   base.eval.num_samples), mode)
    return Objective(stem, mode)


def _mapping(value: Any, key: str, bad) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad(f"{key}: expected a mapping, got {value!r}")
    return value


def _fields(value: Any, cls: type, key: str, bad) -> dict:
    value = _mapping(value, key, bad)
    names = {f.name for f in fields(cls)}
    for k in value:
        if k not in names:
            raise bad(f"{key}.{k}: unknown key, expected one of {sorted(names)}")
    return value


def _param(key: str, spec: Any, flat: dict, base: RunConfig, bad) -> Param:
    if key not in flat:
        raise bad(f"params.{key}: unknown config key")
    if not isinstance(spec, dict) or spec.get("dist") not in DISTRIBUTIONS:
        raise bad(f"params.{key}: dist must be one of {DISTRIBUTIONS}")
    extra = set(spec) - {"dist", "low", "high", "values", "when"}
    if extra:
        raise bad(f"params.{key}: unknown field {sorted(extra)[0]!r}")
    p = Param(key, spec["dist"], spec.get("low"), spec.get("high"), spec.get("values"), spec.get("when") or {})
    if p.dist == "choice":
        if not isinstance(p.values, list) or not p.values:
            raise bad(f"params.{key}: choice needs a non-empty values list")
        candidates = p.values
    else:
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (p.low, p.high)):
            raise bad(f"params.{key}: {p.dist} needs finite numeric low and high")
        p.low, p.high = float(p.low), float(p.high)
        if p.low >= p.high:
            raise bad(f"params.{key}: low {p.low:g} must be below high {p.high:g}")
        if p.dist == "loguniform" and p.low <= 0:
            raise bad(f"params.{key}: loguniform bounds must be positive, got low {p.low:g}")
        candidates = [int(p.low), int(p.high)] if p.dist == "int" else [p.low, p.high]
    if not isinstance(p.when, dict):
        raise bad(f"params.{key}: when must be a mapping of key: value")
    for cond in p.when:
        if cond not in flat:
            raise bad(f"params.{key}: condition on a missing key {cond!r}")
    for value in candidates:  # every value must make a valid config
        try:
            base.with_overrides({key: value})
        except ConfigError as e:
            raise bad(f"params.{key}: {e}") from None
    return p
