"""Pictures a person looks at: sample grids (images or 2-D scatter) as PNG files.

matplotlib and torchvision are imported where a picture is drawn: every Ray Train worker
and controller imports this module, and the two cost ~3 s of CPU at each import."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from distgan.latent import Latent, vary_latents


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Images in [-1, 1]; `nrow` images per row (class-ordered grids pass images per class)."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or max(1, int(math.sqrt(len(images))))
    save_image(images.float().cpu(), path, nrow=nrow, normalize=True, value_range=(-1, 1), padding=2)
    return path


def save_points(points: torch.Tensor, path: str | Path, reference: torch.Tensor | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    if reference is not None:
        ax.scatter(*reference[:, :2].T.cpu(), s=2, c="tab:gray", alpha=0.3, label="real")
    ax.scatter(*points[:, :2].T.cpu(), s=2, c="tab:blue", alpha=0.5, label="generated")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


#: Columns of an evaluation's code sweeps (a model with InfoGAN codes).
VARY_STEPS = 9


def sample_grid(G: torch.nn.Module, arch: str, grid_size: int, path: str | Path, device: torch.device,
                reference: torch.Tensor | None = None, latent: Latent | None = None) -> Path:
    """G_ema's samples of the fixed evaluation latents: class-ordered rows for conditional
    models; a scatter over the real data for points. With InfoGAN codes, what the codes do
    instead: a block per continuous code (as `distgan sample --vary`), rows of fixed z (one
    per class), columns the code from -2 to 2, a dark row between blocks."""
    from distgan.metrics.evaluate import EVAL_SEED, fixed_latents

    latent = latent or Latent(G.z_dim)
    was_training = G.training
    G.eval()
    k = G.num_classes
    with torch.no_grad():
        if arch == "mlp":
            z, _ = fixed_latents(2000, latent, 0, EVAL_SEED)
            out = save_points(G(z.to(device)).float(), path, reference)
        elif latent.codes:
            rows = k or max(1, grid_size // VARY_STEPS)
            y = torch.arange(rows).repeat_interleave(VARY_STEPS).to(device) if k else None
            images = []
            for code in range(1, latent.codes + 1):
                if images:
                    images.append(torch.full((VARY_STEPS, *images[0].shape[1:]), -1.0, device=device))
                images.append(G(vary_latents(latent, code, rows, VARY_STEPS, EVAL_SEED).to(device), y).float())
            out = save_image_grid(torch.cat(images).clamp(-1, 1), path, nrow=VARY_STEPS)
        else:
            per_row = max(1, grid_size // k) if k else None
            n = per_row * k if k else grid_size
            z, _ = fixed_latents(n, latent, 0, EVAL_SEED)
            y = torch.arange(k).repeat_interleave(per_row).to(device) if k else None
            out = save_image_grid(G(z.to(device), y).float(), path, nrow=per_row)
    G.train(was_training)
    return out
