"""Promotion and sampling: the lowest-FID checkpoint over all trials of a tuning job,
re-evaluated with a larger protocol (so the promoted number is not the lucky draw that won),
logged with mlflow.pytorch, registered and given an alias; then images from the registry.

The registered model is G_ema behind `Sampler`, exported in MLflow's pt2 format (no pickled
code: loading it runs none). Its input is one float tensor: the latent z, and for a
conditional G one more column holding the class index.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from pathlib import Path

import torch
from torch import nn

from distgan import checkpoint, tracking
from distgan.config import ConfigError, RunConfig
from distgan.data.schema import inspect
from distgan.loop import eval_context
from distgan.metrics.detectors import file_sha256
from distgan.metrics.evaluate import EVAL_SEED, evaluate, fid_name, fixed_latents
from distgan.models import build_models
from distgan.plots import save_image_grid, save_points

ARTIFACT = "generator"
SHA_TAG = "checkpoint_sha256"


class Sampler(nn.Module):
    """G with one tensor input, so MLflow's signature and pyfunc serving can describe it."""

    def __init__(self, G: nn.Module, z_dim: int, conditional: bool):
        super().__init__()
        self.G, self.z_dim, self.conditional = G, z_dim, conditional

    def forward(self, zy: torch.Tensor) -> torch.Tensor:
        y = zy[:, self.z_dim].long() if self.conditional else None
        return self.G(zy[:, :self.z_dim], y).clamp(-1, 1)


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


def best_trial(parent, children):
    """The child run with the lowest finite best FID that kept a checkpoint."""
    scored = [r for r in children if math.isfinite(r.data.metrics.get("best_fid", math.inf))
              and r.data.metrics["best_fid"] < 1e4 and r.data.tags.get("best_checkpoint")]
    if not scored:
        raise ConfigError(f"parent run {parent.info.run_id} ({parent.info.run_name}): no trial with a finite FID "
                          "and a checkpoint, nothing to promote")
    return min(scored, key=lambda r: r.data.metrics["best_fid"])


def fetch_checkpoint(path: str, tmp: str) -> Path:
    """A local checkpoint directory as is; a storage URI (s3://, gs://) downloaded by Ray."""
    if "://" not in path:
        return Path(path)
    import ray.train

    return Path(ray.train.Checkpoint(path=path).to_directory(tmp))


def load_generator(ckpt_dir: Path, device: torch.device) -> tuple[nn.Module, RunConfig, dict]:
    state, cfg, metrics = checkpoint.load(ckpt_dir, map_location=device)  # weights_only=True
    G, _ = build_models(cfg.model)
    G.load_state_dict(state["G_ema"])
    return G.to(device).eval(), cfg, metrics


def reevaluate(G: nn.Module, cfg: RunConfig, data_dir: str, n: int, device: torch.device) -> dict[str, float]:
    """The promoted FID: n samples, the run's own detector; `detector` names the one used."""
    cfg = cfg.with_overrides({"eval.num_samples": n})
    ctx = eval_context(cfg, data_dir, inspect(data_dir), device)
    scores = evaluate(G, n, cfg.eval.batch_size, ctx.detector, ctx.real, device=device, mixture=ctx.mixture)
    return {**scores, "detector": ctx.detector.name}


def promote(uri: str, experiment: str, parent_run_id: str | None, model_name: str, alias: str, eval_n: int,
            device: str | None = None) -> dict:
    """Register the job's best checkpoint (once: promoting it again only moves the alias)."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    c = tracking.client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        raise ConfigError(f"--experiment {experiment}: no such MLflow experiment at {uri}")
    parent, children = job_runs(c, exp.experiment_id, parent_run_id)
    best = best_trial(parent, children)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = fetch_checkpoint(best.data.tags["best_checkpoint"], tmp)
        sha = file_sha256(ckpt / checkpoint.STATE)
        known = [v for v in c.search_model_versions(f"name = '{model_name}'") if v.tags.get(SHA_TAG) == sha]
        if known:
            c.set_registered_model_alias(model_name, alias, known[0].version)
            return {"version": known[0].version, "new": False, **known[0].tags}
        G, cfg, train_metrics = load_generator(ckpt, dev)
    data_dir = parent.data.tags.get("data_dir") or cfg.data.path
    scores = reevaluate(G, cfg, data_dir, eval_n, dev)
    z_dim, k = cfg.model.z_dim, (cfg.model.num_classes if cfg.model.conditional else 0)
    model = Sampler(G, z_dim, bool(k)).cpu().eval()
    example = sampler_input(*fixed_latents(4, z_dim, k, EVAL_SEED))
    with torch.no_grad():
        signature = infer_signature(example.numpy(), model(example).numpy())
    train_fid = fid_name(cfg.eval.num_samples)
    tags = {SHA_TAG: sha, "trial_id": best.data.tags.get(tracking.TRIAL, ""), "parent_run_id": parent.info.run_id,
            "detector": scores["detector"], "step": str(int(train_metrics.get("step", -1))),
            "config_sha256": hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:16],
            train_fid: f"{best.data.metrics['best_fid']:.6g}", fid_name(eval_n): f"{scores[fid_name(eval_n)]:.6g}"}
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
        logged = mlflow.pytorch.log_model(model, name=ARTIFACT, input_example=example.numpy(), signature=signature,
                                          metadata={"z_dim": z_dim, "num_classes": k, "arch": cfg.model.arch},
                                          extra_files=[str(config_file)], registered_model_name=model_name)
    tracking.end_run(c, best.info.run_id, status)  # promotion does not change how the trial ended
    version = str(logged.registered_model_version)
    for key, value in tags.items():
        c.set_model_version_tag(model_name, version, key, value)
    c.set_registered_model_alias(model_name, alias, version)
    return {"version": version, "new": True, **tags}


def sampler_input(z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    return torch.cat([z, y.float()[:, None]], 1) if y is not None else z


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation: Gaussian latents live near a sphere, a straight line cuts inside it."""
    omega = torch.arccos((a / a.norm() * b / b.norm()).sum().clamp(-1, 1))
    if omega.abs() < 1e-6:
        return (1 - t)[:, None] * a + t[:, None] * b
    return (torch.sin((1 - t) * omega)[:, None] * a + torch.sin(t * omega)[:, None] * b) / torch.sin(omega)


def sample_latents(z_dim: int, k: int, n: int, label: int | None, interpolate: tuple[int, int] | None,
                   steps: int, seed: int) -> tuple[torch.Tensor, int]:
    """The model input and images per row: class rows (conditional), or one interpolation row
    per class between the latents of seeds A and B."""
    if label is not None and not 0 <= label < max(k, 1):
        raise ConfigError(f"--label {label}: the model has {k} classes" if k else
                          f"--label {label}: the model is not conditional")
    if interpolate:
        a, b = (torch.randn(z_dim, generator=torch.Generator().manual_seed(s)) for s in interpolate)
        z = slerp(a, b, torch.linspace(0, 1, steps))
        classes = [label] if label is not None else (list(range(k)) if k else [None])
        zs = torch.cat([z] * len(classes))
        y = torch.tensor(classes).repeat_interleave(steps) if k else None
        return sampler_input(zs, y), steps
    per_row = max(1, n // k) if k and label is None else max(1, int(math.sqrt(n)))
    count = per_row * k if k and label is None else n
    z = torch.randn(count, z_dim, generator=torch.Generator().manual_seed(seed))
    if not k:
        return z, per_row
    y = torch.full((n,), label) if label is not None else torch.arange(k).repeat_interleave(per_row)
    return sampler_input(z, y), per_row


def sample(uri: str, model_uri: str, out: str | Path, n: int = 64, label: int | None = None,
           interpolate: tuple[int, int] | None = None, steps: int = 8, seed: int = 0) -> Path:
    import mlflow
    import mlflow.pytorch

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        meta = mlflow.models.get_model_info(model_uri).metadata or {}
    except Exception as e:
        raise ConfigError(f"--model {model_uri}: not found at {uri} ({type(e).__name__})") from None
    G = mlflow.pytorch.load_model(model_uri)
    zy, per_row = sample_latents(int(meta["z_dim"]), int(meta["num_classes"]), n, label, interpolate, steps, seed)
    with torch.no_grad():
        x = G(zy)
    if meta.get("arch") == "mlp":
        return save_points(x, out)
    return save_image_grid(x, out, nrow=per_row)

