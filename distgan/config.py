"""Typed run configuration: plain data, validated once, addressed by dotted keys.

Search spaces and ``--set`` overrides name fields as ``section.field`` (``optim.lr_g``);
every error names that dotted key so a bad value is found without reading code.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from distgan.errors import InputError, RunFailed  # noqa: F401 (RunFailed: the CLI's light import)

LOSS_KINDS = ("ns", "minimax", "hinge", "wgan-gp", "lsgan")
AUG_KINDS = ("none", "diffaug", "ada")
BUILTIN_DATA = ("mnist-embedded", "ring8", "grid25")
DETECTORS = ("auto", "lenet-mnist", "inception", "coords")
ARCHS = ("dcgan", "resnet", "stylegan2", "mlp")
IMAGE_RESOLUTIONS = (28, 32, 64)
PLACEMENT = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
MATERIALIZE = ("auto", "always", "never")
SWITCH = ("auto", "on", "off")
#: Keys a resumed run may not change: they change the model's shape or what its numbers mean
#: (the evaluation protocol), so the checkpoint or the history would no longer fit.
FIXED_ON_RESUME = ("data.", "model.", "eval.num_samples", "eval.detector")


class ConfigError(InputError):
    """A bad configuration value; its message is one line that names the dotted key."""


def env_seconds(name: str, default: float) -> float:
    """A time limit from the environment, read where it is used, so a bad value is one line
    naming the variable, not a traceback when a module is imported."""
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = math.nan
    if not value > 0:
        raise ConfigError(f"{name}={raw!r}: expected a number of seconds above 0")
    return value


@dataclass
class DataConfig:
    path: str = ""
    """Directory of Parquet shards (see distgan.data.schema): a local path or a URI
    (s3://bucket/prefix, gs://...). Empty: use `builtin`."""
    builtin: str = "mnist-embedded"
    """Data set prepared into the run directory when `path` is empty."""
    num_points: int = 20000
    """Samples drawn for the 2-D mixtures (ring8, grid25)."""
    materialize: str = "auto"
    """Ray runs: `always` reads and decodes the set once into the object store, where every
    worker indexes the same batches a one-process run draws (a resume continues them
    exactly); `never` streams every epoch from Parquet through Ray Data; `auto` does the
    first when the decoded set takes under a quarter of the object store memory."""

    def validate(self) -> None:
        if not self.path and self.builtin not in BUILTIN_DATA:
            raise ConfigError(f"data.builtin: {self.builtin!r} is not one of {BUILTIN_DATA} (or set data.path)")
        _check(self.num_points >= 2, "data.num_points", self.num_points, ">= 2")
        _check(self.materialize in MATERIALIZE, "data.materialize", self.materialize, f"one of {MATERIALIZE}")


@dataclass
class ModelConfig:
    arch: str = "dcgan"
    """Images: `dcgan`, `resnet` (SNGAN/BigGAN-style G and D), `stylegan2` (a StyleGAN2-style
    G with the ResNet D); points: `mlp`."""
    resolution: int = 28
    """Image side (28, 32 or 64); point dimension for mlp."""
    channels: int = 1
    z_dim: int = 64
    g_width: int = 32
    """Channels of G's last hidden layer; deeper layers double it (the width multiplier)."""
    d_width: int = 32
    conditional: bool = False
    """Class-conditional: the label into G (see `cond`), projection discriminator."""
    cond: str = "concat"
    """How a conditional G takes the label: `concat` (an embedding beside z) or `cbn`
    (conditional BatchNorm: per-class scale and shift in every normalization layer)."""
    num_classes: int = 10
    sn_d: bool = True
    """Spectral normalization on D's weights (fights vanishing gradients)."""
    sn_g: bool = False
    d_input_gain: float = 1.0
    """D multiplies its input by this. A spectrally normalized D is 1-Lipschitz in input units,
    too flat to resolve modes of std 0.02 (ring8): a gain of 20 lets it be 20-Lipschitz."""
    sync_bn: bool = False
    """Convert G's BatchNorm to SyncBatchNorm under DDP (statistics over the global batch)."""
    attention: bool = False
    """resnet: a self-attention layer at half the image side in G and D (SAGAN)."""
    mapping_layers: int = 4
    """stylegan2: layers of the mapping network z -> W."""
    style_mixing: float = 0.9
    """stylegan2: probability that a training sample takes its later styles from a second z."""
    codes: int = 0
    """InfoGAN: continuous latent codes c ~ U(-1, 1) fed to G beside z, predicted back by a Q
    head on D's trunk (see loss.info_weight); on digits they learn e.g. slant and stroke width."""
    code_categories: int = 0
    """InfoGAN: K of one categorical code (0: none); on unlabelled digits it drifts toward the
    classes (clustering accuracy 0.31 after 4,000 steps: docs/benchmarks.md)."""

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One sample G makes: (dimension,) for points, (C, H, W) for images."""
        return (self.resolution,) if self.arch == "mlp" else (self.channels, self.resolution, self.resolution)

    def validate(self) -> None:
        _check(self.arch in ARCHS, "model.arch", self.arch, f"one of {ARCHS}")
        _check(self.cond in ("concat", "cbn"), "model.cond", self.cond, "concat or cbn")
        if self.arch != "mlp":
            _check(self.resolution in IMAGE_RESOLUTIONS, "model.resolution", self.resolution,
                   f"one of {IMAGE_RESOLUTIONS} for {self.arch}")
            _check(self.channels in (1, 3), "model.channels", self.channels, "1 or 3")
            if self.arch == "resnet" and self.conditional:
                _check(self.cond == "cbn", "model.cond", self.cond, "cbn for resnet (its G takes the label by "
                       "conditional BatchNorm)")
            if self.arch == "stylegan2":
                _check(not self.sn_g, "model.sn_g", self.sn_g, "false for stylegan2 (demodulation normalizes "
                       "its weights)")
                _check(self.cond == "concat" or not self.conditional, "model.cond", self.cond,
                       "concat for stylegan2 (the label joins z in the mapping network)")
        else:
            _check(self.resolution >= 1, "model.resolution", self.resolution, ">= 1")
            _check(not self.conditional, "model.conditional", self.conditional, "false for arch mlp")
        _check(self.z_dim >= 1, "model.z_dim", self.z_dim, ">= 1")
        _check(self.g_width >= 1, "model.g_width", self.g_width, ">= 1")
        _check(self.d_width >= 1, "model.d_width", self.d_width, ">= 1")
        _check(self.num_classes >= 1, "model.num_classes", self.num_classes, ">= 1")
        _check(self.d_input_gain > 0, "model.d_input_gain", self.d_input_gain, "> 0")
        _check(self.mapping_layers >= 1, "model.mapping_layers", self.mapping_layers, ">= 1")
        _check(0 <= self.style_mixing <= 1, "model.style_mixing", self.style_mixing, "in [0, 1]")
        _check(self.codes >= 0, "model.codes", self.codes, ">= 0")
        _check(self.code_categories == 0 or self.code_categories >= 2, "model.code_categories",
               self.code_categories, "0 (none) or >= 2")
        if self.arch == "stylegan2" and (self.codes or self.code_categories):
            _check(self.style_mixing == 0, "model.style_mixing", self.style_mixing,
                   "0 with InfoGAN codes (a mixed-in second z would carry other codes)")
        if self.attention and self.arch != "resnet":
            raise ConfigError(f"model.attention: true is for arch resnet (arch {self.arch} has no attention layer)")


@dataclass
class LossConfig:
    kind: str = "ns"
    """ns (non-saturating), minimax (the original log(1 - D(G(z)))), hinge, wgan-gp, lsgan."""
    gp_weight: float = 10.0
    """Gradient-penalty weight lambda (wgan-gp only)."""
    r1_gamma: float = 0.0
    """R1 weight gamma: gamma/2 E||grad D(x_real)||^2 (0: off)."""
    r1_every: int = 16
    """Lazy R1: its own D step every this many D updates, its loss scaled by as much."""
    lecam_weight: float = 0.0
    """LeCam regularization weight (0: off); 0.1-0.3 on small data sets."""
    lecam_decay: float = 0.99
    """Decay of LeCam's moving averages of D's outputs."""
    info_weight: float = 0.1
    """InfoGAN's lambda on the Q head's negative log-likelihood of the continuous codes, in D's
    (Q's) and G's losses (used when model.codes is set). Measured on digits
    (bench/latent_control.py): 1 swamps the GAN loss in D's shared trunk (fd x4), 0.1 does not."""
    info_category_weight: float = 1.0
    """InfoGAN's lambda on the categorical code's cross-entropy (the paper's 1)."""

    def validate(self) -> None:
        _check(self.kind in LOSS_KINDS, "loss.kind", self.kind, f"one of {LOSS_KINDS}")
        _check(self.gp_weight >= 0, "loss.gp_weight", self.gp_weight, ">= 0")
        _check(self.r1_gamma >= 0, "loss.r1_gamma", self.r1_gamma, ">= 0")
        _check(self.r1_every >= 1, "loss.r1_every", self.r1_every, ">= 1")
        _check(self.lecam_weight >= 0, "loss.lecam_weight", self.lecam_weight, ">= 0")
        _check(0 <= self.lecam_decay < 1, "loss.lecam_decay", self.lecam_decay, "in [0, 1)")
        _check(self.info_weight >= 0, "loss.info_weight", self.info_weight, ">= 0")
        _check(self.info_category_weight >= 0, "loss.info_category_weight", self.info_category_weight, ">= 0")


@dataclass
class AugConfig:
    kind: str = "none"
    """What D sees of reals and fakes: `none`; `diffaug` (DiffAugment, every operation on every
    sample); `ada` (each operation with probability p, p following r_t to `target`)."""
    policy: str = "translation,cutout"
    """Operations, comma-separated: translation, cutout, color."""
    target: float = 0.6
    """ADA: the r_t = E sign(D(x_real)) that p steers to."""
    ada_kimg: float = 100.0
    """ADA: thousands of real images for p to move from 0 to 1 (the paper's 500 is for long runs)."""
    ada_every: int = 4
    """ADA: steps between updates of p."""

    def validate(self) -> None:
        from distgan.augment import parse_policy

        _check(self.kind in AUG_KINDS, "aug.kind", self.kind, f"one of {AUG_KINDS}")
        try:
            parse_policy(self.policy)
        except ValueError as e:
            raise ConfigError(f"aug.policy: {e}") from None
        _check(0 < self.target < 1, "aug.target", self.target, "in (0, 1)")
        _check(self.ada_kimg > 0, "aug.ada_kimg", self.ada_kimg, "> 0")
        _check(self.ada_every >= 1, "aug.ada_every", self.ada_every, ">= 1")


@dataclass
class OptimConfig:
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_decay: str = "none"
    """`linear`: both learning rates fall linearly to 0 at train.steps (the last steps refine
    instead of oscillating); `none`: constant."""

    def validate(self) -> None:
        _check(self.lr_g > 0, "optim.lr_g", self.lr_g, "> 0")
        _check(self.lr_d > 0, "optim.lr_d", self.lr_d, "> 0")
        _check(0 <= self.beta1 < 1, "optim.beta1", self.beta1, "in [0, 1)")
        _check(0 <= self.beta2 < 1, "optim.beta2", self.beta2, "in [0, 1)")
        _check(self.lr_decay in ("none", "linear"), "optim.lr_decay", self.lr_decay, "none or linear")


@dataclass
class TrainConfig:
    steps: int = 1000
    """Generator steps (engine steps) in the whole run."""
    batch_size: int = 64
    """Per-worker batch; the global batch is batch_size x workers."""
    n_d: int = 1
    """D:G step ratio: discriminator updates per generator update."""
    ema: float = 0.999
    """Decay of G's exponential moving average (0 keeps G_ema equal to G)."""
    seed: int = 0
    eval_every: int = 250
    """Steps between evaluations (sample grid, metrics, checkpoint)."""
    amp: str = "auto"
    """auto: bf16 autocast on CUDA, fp32 on CPU; bf16; off."""
    keep_checkpoints: int = 3
    """Checkpoints kept per run: the best by the Fréchet distance (Ray's CheckpointConfig.num_to_keep)."""
    channels_last: str = "auto"
    """Images in channels-last memory format (tensor cores' layout). auto: on for CUDA images."""
    fused_optim: str = "auto"
    """Fused Adam (one kernel for all parameters). auto: on for CUDA."""
    cudnn_benchmark: str = "auto"
    """cudnn.benchmark: pick the fastest convolution algorithms once. auto: on for CUDA."""
    compile: str = "off"
    """torch.compile the D step and the G step (auto: on for CUDA). WGAN-GP's double backward is
    not compiled (torch.compile does not support it): its D step runs eager."""

    def validate(self) -> None:
        _check(self.steps >= 1, "train.steps", self.steps, ">= 1")
        _check(self.batch_size >= 1, "train.batch_size", self.batch_size, ">= 1")
        _check(self.n_d >= 1, "train.n_d", self.n_d, ">= 1")
        _check(0 <= self.ema < 1, "train.ema", self.ema, "in [0, 1)")
        _check(self.eval_every >= 1, "train.eval_every", self.eval_every, ">= 1")
        _check(self.amp in ("auto", "bf16", "off"), "train.amp", self.amp, "auto, bf16 or off")
        _check(self.keep_checkpoints >= 1, "train.keep_checkpoints", self.keep_checkpoints, ">= 1")
        for key in ("channels_last", "fused_optim", "cudnn_benchmark", "compile"):
            _check(getattr(self, key) in SWITCH, f"train.{key}", getattr(self, key), f"one of {SWITCH}")


@dataclass
class EvalConfig:
    num_samples: int = 2000
    """Generated and real samples per evaluation; metric names carry it (fd_lenet2k, fid10k)."""
    detector: str = "auto"
    """Feature network: auto picks lenet-mnist for 28x28x1, coords for points, else inception."""
    batch_size: int = 250
    grid_size: int = 64
    """Images in the logged sample grid."""
    cache_dir: str = ""
    """Reference-statistics cache (a path or URI); empty: a tuning job's storage, else
    $DISTGAN_CACHE/stats or ~/.cache/distgan/stats."""
    metrics: list[str] = field(default_factory=lambda: ["fd", "modes", "control"])
    """Metrics of each evaluation (distgan.metrics.registry): fd (the Fréchet distance, always),
    modes (class or mixture-mode coverage), control (how InfoGAN codes steer ink, slant, height
    and width: info_rho), kd (KID), prdc (precision/recall/density/coverage);
    `kd@5` computes KID at every 5th evaluation only."""
    fd_bootstrap: int = 10
    """Resamples of the generated features for the distance's standard error (`fd_lenet2k_se`),
    the noise the `watch` scheduler's margins use; 0 or 1: not measured."""

    def validate(self) -> None:
        from distgan.metrics.registry import parse

        _check(self.num_samples >= 2, "eval.num_samples", self.num_samples, ">= 2")
        try:
            schedule = parse(self.metrics)
        except ValueError as e:
            raise ConfigError(f"eval.metrics: {e}") from None
        if "prdc" in schedule:
            _check(self.num_samples > 5, "eval.num_samples", self.num_samples, "> 5 for prdc (its k-NN balls use k=5)")
        if "kd" in schedule:
            _check(self.num_samples >= 4, "eval.num_samples", self.num_samples, ">= 4 for kd")
        _check(self.detector in DETECTORS, "eval.detector", self.detector, f"one of {DETECTORS}")
        _check(self.batch_size >= 1, "eval.batch_size", self.batch_size, ">= 1")
        _check(self.grid_size >= 1, "eval.grid_size", self.grid_size, ">= 1")
        _check(0 <= self.fd_bootstrap <= 1000, "eval.fd_bootstrap", self.fd_bootstrap, "in [0, 1000]")


@dataclass
class ScalingConfig:
    num_workers: int = 0
    """Ray Train workers; 0 runs the loop in this process without Ray."""
    use_gpu: bool = False
    cpus_per_worker: float = 0.5
    """Fractional by default so Ray Data's read tasks always find a CPU."""
    gpus_per_worker: float = 1.0
    data_cpus_per_task: float = 0.25
    """CPU each Ray Data read/decode task requests (fractional: small machines must still fit one)."""
    data_cpus: float = 1.0
    """CPUs each run leaves free for Ray Data (its file-listing task takes a whole CPU):
    runs and trials that would leave less are refused or not started, never left to hang."""
    max_failures: int = 1
    """Restarts of a run's worker group after a worker dies (from its last checkpoint); -1: forever."""
    placement_strategy: str = "PACK"
    """How a run's workers are placed (Ray placement groups): PACK on few nodes, SPREAD over many."""
    shared_storage: bool = False
    """The local storage path is mounted on every node (NFS): needed to use one on a multi-node cluster."""

    def validate(self) -> None:
        _check(self.placement_strategy in PLACEMENT, "scaling.placement_strategy", self.placement_strategy,
               f"one of {PLACEMENT}")
        _check(self.num_workers >= 0, "scaling.num_workers", self.num_workers, ">= 0")
        _check(self.cpus_per_worker > 0, "scaling.cpus_per_worker", self.cpus_per_worker, "> 0")
        _check(self.gpus_per_worker > 0, "scaling.gpus_per_worker", self.gpus_per_worker, "> 0")
        _check(self.data_cpus_per_task > 0, "scaling.data_cpus_per_task", self.data_cpus_per_task, "> 0")
        _check(self.data_cpus >= self.data_cpus_per_task, "scaling.data_cpus", self.data_cpus,
               f">= scaling.data_cpus_per_task ({self.data_cpus_per_task})")
        _check(self.max_failures >= -1, "scaling.max_failures", self.max_failures, ">= -1")


@dataclass
class StopConfig:
    plateau_evals: int = 0
    """Stop when the best FID has not improved over this many evaluations (0: never)."""
    plateau_delta: float = 0.01
    """Relative FID improvement that counts as progress."""
    saturation_evals: int = 3
    """Stop as diverged after this many evaluations with D saturated (0: never)."""
    saturation_eps: float = 0.01
    """D is saturated when D(x) >= 1 - eps and D(G(z)) <= eps (ns and minimax losses)."""
    max_loss: float = 1e6
    """Stop as diverged when |loss_d| or |loss_g| (mean over the evaluation window) exceeds
    this: a logit or a 1-Lipschitz critic's gap that large is an explosion, even while
    finite (0: never)."""

    def validate(self) -> None:
        _check(self.plateau_evals >= 0, "stop.plateau_evals", self.plateau_evals, ">= 0")
        _check(0 <= self.plateau_delta < 1, "stop.plateau_delta", self.plateau_delta, "in [0, 1)")
        _check(self.saturation_evals >= 0, "stop.saturation_evals", self.saturation_evals, ">= 0")
        _check(0 < self.saturation_eps < 0.5, "stop.saturation_eps", self.saturation_eps, "in (0, 0.5)")
        _check(self.max_loss >= 0, "stop.max_loss", self.max_loss, ">= 0")


@dataclass
class TrackingConfig:
    mlflow_uri: str = ""
    """Empty: no tracking in a plain `distgan train`. Never holds credentials (user:password
    in a URI is refused: use MLFLOW_TRACKING_USERNAME/PASSWORD or the cluster's secrets)."""
    experiment: str = "distgan"

    def validate(self) -> None:
        from urllib.parse import urlsplit

        if urlsplit(self.mlflow_uri).password is not None:
            raise ConfigError("tracking.mlflow_uri: holds a password; give the bare URI and the credentials in "
                              "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD")
        _check(bool(self.experiment.strip()), "tracking.experiment", self.experiment, "a non-empty name")


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def validate(self) -> "RunConfig":
        for f in fields(self):
            section = getattr(self, f.name)
            if hasattr(section, "validate"):
                section.validate()
        if self.model.arch == "mlp" and self.data.builtin not in ("ring8", "grid25") and not self.data.path:
            raise ConfigError(f"model.arch: mlp needs point data, but data.builtin is {self.data.builtin!r}")
        if self.aug.kind != "none" and self.model.arch == "mlp":
            raise ConfigError(f"aug.kind: {self.aug.kind} augments images; model.arch mlp makes points")
        if self.aug.kind == "ada" and self.loss.kind == "wgan-gp":
            raise ConfigError("aug.kind: ada steers by the sign of D's output, which a WGAN critic's free offset "
                              "makes meaningless; use diffaug with loss.kind wgan-gp")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        return _build(cls, d, "").validate()

    def with_overrides(self, overrides: dict[str, Any]) -> "RunConfig":
        """Apply {dotted.key: value} on a copy; values are type-checked like from_dict."""
        d = self.to_dict()
        for key, value in overrides.items():
            parts = key.split(".")
            if len(parts) != 2 or parts[0] not in d or parts[1] not in d[parts[0]]:
                raise ConfigError(f"{key}: unknown config key")
            d[parts[0]][parts[1]] = value
        return RunConfig.from_dict(d)

    def flat(self) -> dict[str, Any]:
        return {f"{s}.{k}": v for s, sec in self.to_dict().items() for k, v in sec.items()}


def resume_changes(saved: RunConfig, new: RunConfig) -> list[str]:
    """Dotted keys that differ and a resume may not change (FIXED_ON_RESUME)."""
    old, now = saved.flat(), new.flat()
    return [k for k in now if now[k] != old[k] and k.startswith(FIXED_ON_RESUME)]


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {value!r} is invalid, expected {expected}")


def _build(cls: type, d: Any, prefix: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {d!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    for key in d:
        if key not in names:
            raise ConfigError(f"{prefix}{key}: unknown config key")
    kwargs = {}
    for name, value in d.items():
        typ = hints[name]
        dotted = f"{prefix}{name}"
        if dataclasses.is_dataclass(typ):
            kwargs[name] = _build(typ, value, dotted + ".")
        else:
            kwargs[name] = _coerce(typ, value, dotted)
    return cls(**kwargs)


def _coerce(typ: type, value: Any, key: str) -> Any:
    if get_origin(typ) is list:
        (item,) = get_args(typ)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: {value!r} is not a list")
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: {value!r} is not a finite number")
    if typ is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: {value!r} is not a bool")
    if typ in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: {value!r} is not a {typ.__name__}")
    if not isinstance(value, typ):
        raise ConfigError(f"{key}: {value!r} is not a {typ.__name__}")
    return value


#: YAML 1.1 reads these as booleans; as values of --set they are words (train.compile=on).
WORDS = {"on", "off", "yes", "no", "y", "n"}


def parse_set(items: list[str]) -> dict[str, Any]:
    """`a.b=value` strings to {key: typed value}; YAML parses the value (1e-4, true, [1, 2]),
    except that on/off/yes/no stay words (a bool is written true or false)."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            value = raw.strip() if raw.strip().lower() in WORDS else yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
            try:
                value = float(value)
            except ValueError:
                pass
        out[key.strip()] = value
    return out


def dumps(cfg: RunConfig) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
