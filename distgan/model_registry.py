"""Promotion and sampling: the lowest-distance checkpoint over all trials of a tuning job,
re-evaluated with a larger protocol (so the promoted number is not the lucky draw that won),
logged with mlflow.pytorch, registered and given an alias; then images from the registry.

The registered model is G_ema behind `Sampler`, exported in MLflow's pt2 format. Loading a
model runs no code from it: only a pytorch model in the pt2 format without a `code/` folder
is accepted, and it is loaded with pickle deserialization off; anything else is refused in
one line. Its input is one float tensor: the latent z, and for a conditional G one more
column holding the class index.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from importlib import metadata
from pathlib import Path

import torch
import yaml
from torch import nn

from distgan import checkpoint, console, storage, tracking
from distgan.config import ConfigError, RunConfig
from distgan.data.schema import inspect
from distgan.latent import Latent, vary_latents
from distgan.metrics import registry as metric_names
from distgan.metrics.detectors import file_sha256
from distgan.metrics.evaluate import EVAL_SEED, Evaluator, fixed_latents
from distgan.models import build_models
from distgan.plots import save_image_grid, save_points

ARTIFACT = "generator"
SHA_TAG = "checkpoint_sha256"
PT2_FILE = "model.pt2"


def requirements() -> list[str]:
    """What loading a pt2 generator needs, pinned to what wrote it: given, because MLflow's
    inference imports the model in a subprocess (9 of a promotion's 17 s on a CPU) and
    guesses (it listed tqdm and, in one run of two, colorama)."""
    return [f"{name}=={metadata.version(name)}" for name in ("torch", "numpy")]


class Sampler(nn.Module):
    """G with one tensor input, so MLflow's signature and pyfunc serving can describe it:
    z, then the label (conditional), then psi (a G that truncates in W: its last column)."""

    def __init__(self, G: nn.Module, z_dim: int, conditional: bool):
        super().__init__()
        self.G, self.z_dim, self.conditional = G, z_dim, conditional
        self.truncates = truncates_in_w(G)

    def forward(self, zy: torch.Tensor) -> torch.Tensor:
        y = zy[:, self.z_dim].long() if self.conditional else None
        if self.truncates:
            return self.G(zy[:, :self.z_dim], y, psi=zy[:, -1:, None]).clamp(-1, 1)
        return self.G(zy[:, :self.z_dim], y).clamp(-1, 1)


def truncates_in_w(G: nn.Module) -> bool:
    """A StyleGAN2-style G truncates toward its mean W; the others by resampling z."""
    return hasattr(G, "w_avg")


def truncate_z(z: torch.Tensor, psi: float, seed: int) -> torch.Tensor:
    """BigGAN's truncation for a G without W: entries beyond 2 psi standard deviations are
    drawn again until within (psi = 1: none)."""
    if psi >= 1:
        return z
    g, z = torch.Generator().manual_seed(seed + 1), z.clone()
    while (out := z.abs() > 2 * psi).any():
        z[out] = torch.randn(int(out.sum()), generator=g)
    return z


def job_runs(c, exp_id: str, parent_run_id: str | None):
    """The parent run (given, else the newest tuning job of the experiment) and its trials."""
    if parent_run_id:
        from mlflow.exceptions import MlflowException

        try:
            parent = c.get_run(parent_run_id)
        except MlflowException:
            raise ConfigError(f"--parent-run {parent_run_id}: no such run") from None
    else:
        runs = c.search_runs([exp_id], f"tags.`{tracking.KIND}` = 'tuning-job'", max_results=1,
                             order_by=["attributes.start_time DESC"])
        if not runs:
            raise ConfigError(f"--experiment: no tuning job in experiment {exp_id}")
        parent = runs[0]
    return parent, tracking.child_runs(c, exp_id, parent.info.run_id)


def best_of(run) -> float:
    """A trial's best distance; runs logged before names carried their feature space say best_fid."""
    m = run.data.metrics
    return m.get(tracking.BEST, m.get(tracking.LEGACY_BEST, math.inf))


PICKS = ("best", "pareto")
#: `--pick pareto` chooses among the Pareto trials within this share of the front's best distance.
PARETO_SLACK = 0.10


def best_trial(parent, children, pick: str = "best"):
    """The child run to promote, among those with a finite best distance and a checkpoint:
    `best`, the lowest distance; `pareto` (a two-objective job), of the Pareto trials whose
    distance is within PARETO_SLACK of the front's best, the one best in the second objective
    (e.g. the most controllable codes that cost at most 10 % in quality)."""
    scored = [r for r in children if math.isfinite(best_of(r)) and best_of(r) < 1e4
              and r.data.tags.get(tracking.BEST_CHECKPOINT)]
    if not scored:
        raise ConfigError(f"parent run {parent.info.run_id} ({parent.info.run_name}): no trial with a finite distance "
                          "and a checkpoint, nothing to promote")
    if pick == "best":
        return min(scored, key=best_of)
    objectives = parent.data.tags.get(tracking.OBJECTIVES, "")
    if not objectives:
        raise ConfigError(f"--pick pareto: parent run {parent.info.run_id} ({parent.info.run_name}) is a one-objective "
                          "job; its space names no second objective")
    metric, mode = objectives.split(",")[1].split(":")
    front = [r for r in scored if r.data.tags.get(tracking.PARETO) == "true"]
    if not front:
        raise ConfigError(f"--pick pareto: parent run {parent.info.run_id} ({parent.info.run_name}) has no Pareto trial "
                          "with a checkpoint")
    limit = min(best_of(r) for r in front) * (1 + PARETO_SLACK)
    near = [r for r in front if best_of(r) <= limit]
    sign = 1 if mode == "max" else -1
    return max(near, key=lambda r: (sign * r.data.metrics.get(f"{metric}_at_best", -sign * math.inf), -best_of(r)))


def fetch_checkpoint(location: str, tmp: str) -> Path:
    """A checkpoint directory as a local path: a local one as is, one in an object store
    (s3://, gs://, scheme intact) downloaded."""
    if not storage.is_uri(location):
        return Path(location)
    return storage.download(location, Path(tmp) / storage.name(location))


def load_generator(ckpt_dir: Path, device: torch.device) -> tuple[nn.Module, RunConfig, dict]:
    state, cfg, metrics = checkpoint.load(ckpt_dir, map_location=device)  # weights_only=True
    G, _ = build_models(cfg.model)
    G.load_state_dict(state["G_ema"])
    return G.to(device).eval(), cfg, metrics


def reevaluate(G: nn.Module, cfg: RunConfig, data_dir: str, n: int, device: torch.device) -> dict[str, float]:
    """The promoted numbers: n samples, the run's own detector, every registered metric."""
    cfg = cfg.with_overrides({"eval.num_samples": n})
    evaluator = Evaluator.build(cfg, inspect(data_dir), device)
    scores = evaluator(G)
    return {**scores, "detector": evaluator.detector.name, "fd_key": evaluator.fd_key}


def promote(uri: str, experiment: str, parent_run_id: str | None, model_name: str, alias: str, eval_n: int,
            device: str | None = None, pick: str = "best") -> dict:
    """Register the job's best checkpoint by `pick` (once: promoting it again only moves the alias)."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    from distgan.engine import pick_device

    dev = pick_device(device)
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        raise ConfigError(f"--experiment {experiment}: no such MLflow experiment at {tracking.redact(uri)}")
    parent, children = job_runs(c, exp.experiment_id, parent_run_id)
    best = best_trial(parent, children, pick)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = fetch_checkpoint(best.data.tags[tracking.BEST_CHECKPOINT], tmp)
        sha = file_sha256(ckpt / checkpoint.STATE)
        name = tracking.literal(model_name)  # a name with both quotes: every version, matched here
        versions = c.search_model_versions(f"name = {name}" if name else None)
        known = [v for v in versions if v.name == model_name and v.tags.get(SHA_TAG) == sha]
        if known:
            c.set_registered_model_alias(model_name, alias, known[0].version)
            return {"version": known[0].version, "new": False, **known[0].tags}
        G, cfg, train_metrics = load_generator(ckpt, dev)
    data_dir = parent.data.tags.get(tracking.DATA_DIR) or cfg.data.path
    scores = reevaluate(G, cfg, data_dir, eval_n, dev)
    latent, k = Latent.of(cfg.model), (cfg.model.num_classes if cfg.model.conditional else 0)
    model = Sampler(G, latent.width, bool(k)).cpu().eval()
    example = sampler_input(*fixed_latents(4, latent, k, EVAL_SEED), 1.0 if model.truncates else None)
    with torch.no_grad():
        signature = infer_signature(example.numpy(), model(example).numpy())
    detector = checkpoint.detector_of(cfg)
    train_key = metric_names.fd_name(detector, cfg.eval.num_samples)
    tags = {SHA_TAG: sha, "trial_id": best.data.tags.get(tracking.TRIAL, ""), "parent_run_id": parent.info.run_id,
            "detector": scores["detector"], "step": str(int(train_metrics.get("step", -1))),
            "config_sha256": hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:16],
            train_key: f"{best_of(best):.6g}", scores["fd_key"]: f"{scores[scores['fd_key']]:.6g}",
            "promoted_metric": scores["fd_key"]}
    for key in ("classes_covered", "modes_covered"):
        if key in scores:
            tags[key] = str(int(scores[key]))
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    status = best.info.status
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=best.info.run_id):  # in its trial's run
        config_file = Path(tmp) / "config.json"
        config_file.write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
        mlflow.log_metrics({f"promoted_{name}": v for name, v in scores.items() if isinstance(v, float)})
        console.quiet_loggers()  # mlflow's import set its own to INFO
        with console.hush_stderr():  # "Successfully registered model ...", "Created version ..."
            logged = mlflow.pytorch.log_model(model, name=ARTIFACT, input_example=example.numpy(),
                                              signature=signature, serialization_format="pt2",
                                              metadata={"z_dim": latent.width, "num_classes": k, "arch": cfg.model.arch,
                                                        "truncation": "w" if model.truncates else "z",
                                                        "noise_dim": latent.noise, "codes": latent.codes,
                                                        "code_categories": latent.categories},
                                              extra_files=[str(config_file)], registered_model_name=model_name,
                                              pip_requirements=requirements())
    tracking.end_run(c, best.info.run_id, status)  # promotion does not change how the trial ended
    version = str(logged.registered_model_version)
    for key, value in tags.items():
        c.set_model_version_tag(model_name, version, key, value)
    c.set_registered_model_alias(model_name, alias, version)
    return {"version": version, "new": True, **tags}


def sampler_input(z: torch.Tensor, y: torch.Tensor | None, psi: float | None = None) -> torch.Tensor:
    """The Sampler's input rows; psi only for a G that truncates in W."""
    parts = [z] + ([y.float()[:, None]] if y is not None else []) + ([torch.full((len(z), 1), psi)] if psi is not None else [])
    return torch.cat(parts, 1)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation: Gaussian latents live near a sphere, a straight line cuts inside it."""
    omega = torch.arccos((a / a.norm() * b / b.norm()).sum().clamp(-1, 1))
    if omega.abs() < 1e-6:
        return (1 - t)[:, None] * a + t[:, None] * b
    return (torch.sin((1 - t) * omega)[:, None] * a + torch.sin(t * omega)[:, None] * b) / torch.sin(omega)


def sample_latents(latent: Latent, k: int, n: int, label: int | None, interpolate: tuple[int, int] | None,
                   steps: int, seed: int, psi: float = 1.0, in_w: bool = False,
                   vary: int | None = None) -> tuple[torch.Tensor, int]:
    """The model input and images per row: class rows (conditional), one interpolation row per
    class between the latents of seeds A and B, or (`vary`: a continuous code's number) rows of
    fixed z (one per class, conditional) whose columns sweep that code; truncated by psi (in W,
    or by resampling z). InfoGAN codes are drawn as in training, held at 0 while interpolating."""
    w_psi = psi if in_w else None
    trunc = (lambda z: z) if in_w else (lambda z: truncate_z(z, psi, seed))  # noqa: E731
    if label is not None and not 0 <= label < max(k, 1):
        raise ConfigError(f"--label {label}: the model has {k} classes" if k else
                          f"--label {label}: the model is not conditional")
    classes = [label] if label is not None else (list(range(k)) if k else [None])
    if vary is not None:
        rows = k if k and label is None else max(1, n // steps)
        zs = vary_latents(latent, vary, rows, steps, seed)
        zs[:, :latent.noise] = trunc(zs[:, :latent.noise])
        y = torch.tensor(classes * (rows // len(classes))).repeat_interleave(steps) if k else None
        return sampler_input(zs, y, w_psi), steps
    if interpolate:
        a, b = (trunc(torch.randn(1, latent.noise, generator=torch.Generator().manual_seed(s)))[0]
                for s in interpolate)
        zs = torch.cat([latent.join(slerp(a, b, torch.linspace(0, 1, steps)))] * len(classes))
        y = torch.tensor(classes).repeat_interleave(steps) if k else None
        return sampler_input(zs, y, w_psi), steps
    per_row = max(1, n // k) if k and label is None else max(1, int(math.sqrt(n)))
    count = per_row * k if k and label is None else n
    z = torch.cat([trunc(torch.randn(count, latent.noise, generator=torch.Generator().manual_seed(seed))),
                   latent.seeded(count, seed + 1)[:, latent.noise:]], 1)  # the codes as in training
    y = None
    if k:
        y = torch.full((n,), label) if label is not None else torch.arange(k).repeat_interleave(per_row)
    return sampler_input(z, y, w_psi), per_row


def check_safe(local: Path, model_uri: str) -> dict:
    """The model's MLmodel when it can be loaded without running its code, else one line."""
    try:
        mlmodel = yaml.safe_load((local / "MLmodel").read_text()) or {}
    except (OSError, yaml.YAMLError):
        raise ConfigError(f"--model {model_uri}: no readable MLmodel file (not an MLflow model)") from None
    flavor = (mlmodel.get("flavors") or {}).get("pytorch")
    if not isinstance(flavor, dict):
        raise ConfigError(f"--model {model_uri}: not a pytorch model (flavors: {sorted(mlmodel.get('flavors') or {})})")
    if flavor.get("code") or (local / "code").exists():
        raise ConfigError(f"--model {model_uri}: carries a code/ folder, which loading would import; refused")
    data = local / str(flavor.get("model_data", "data"))
    if not (data / PT2_FILE).is_file():
        raise ConfigError(f"--model {model_uri}: not in the pt2 format (a pickled model runs code when loaded); "
                          "refused")
    return mlmodel


def load_model(uri: str, model_uri: str, tmp: str) -> tuple[nn.Module, dict]:
    """A registered generator and its metadata, loaded without running any code from it."""
    import mlflow
    import mlflow.artifacts
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # else models:/ resolves against a default ./mlflow.db it would create
    try:  # no progress bar: an error stays one line on stderr
        with tracking.bounded(30), tracking.environ(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"):
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp, tracking_uri=uri))
    except MlflowException as e:
        raise ConfigError(f"--model {model_uri}: not found at {tracking.redact(uri)} "
                          f"({str(e).splitlines()[0][:200]})") from None
    mlmodel = check_safe(local, model_uri)
    try:
        with tracking.environ(MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false"):
            G = mlflow.pytorch.load_model(str(local))
    except MlflowException as e:
        raise ConfigError(f"--model {model_uri}: refused ({str(e).splitlines()[0][:200]})") from None
    return G, mlmodel.get("metadata") or {}


def sample(uri: str, model_uri: str, out: str | Path, n: int = 64, label: int | None = None,
           interpolate: tuple[int, int] | None = None, steps: int = 8, seed: int = 0, psi: float = 1.0,
           vary: int | None = None) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        G, meta = load_model(uri, model_uri, tmp)
    try:
        z_dim, k = int(meta["z_dim"]), int(meta["num_classes"])
        # models promoted before InfoGAN codes carry no code counts: z only
        codes, categories = int(meta.get("codes", 0)), int(meta.get("code_categories", 0))
        latent = Latent(int(meta.get("noise_dim", z_dim)), codes, categories)
    except (KeyError, ValueError, TypeError):
        raise ConfigError(f"--model {model_uri}: no z_dim/num_classes metadata (not a distgan generator)") from None
    if latent.width != z_dim:
        raise ConfigError(f"--model {model_uri}: metadata z_dim {z_dim} is not noise_dim + codes + code_categories")
    zy, per_row = sample_latents(latent, k, n, label, interpolate, steps, seed, psi, meta.get("truncation") == "w",
                                 vary)
    with torch.no_grad():
        x = G(zy)
    if meta.get("arch") == "mlp":
        return save_points(x, out)
    return save_image_grid(x, out, nrow=per_row)
