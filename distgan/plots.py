"""Pictures a person looks at: sample grids (images or 2-D scatter) as PNG files."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import save_image  # noqa: E402


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Images in [-1, 1]; `nrow` images per row (class-ordered grids pass images per class)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or max(1, int(math.sqrt(len(images))))
    save_image(images.float().cpu(), path, nrow=nrow, normalize=True, value_range=(-1, 1), padding=2)
    return path


def save_points(points: torch.Tensor, path: str | Path, reference: torch.Tensor | None = None) -> Path:
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


def sample_grid(G: torch.nn.Module, arch: str, grid_size: int, path: str | Path, device: torch.device,
                reference: torch.Tensor | None = None) -> Path:
    """G_ema's samples of the fixed evaluation latents: class-ordered rows for conditional
    models; a scatter over the real data for points."""
    from distgan.metrics.evaluate import EVAL_SEED, fixed_latents

    was_training = G.training
    G.eval()
    with torch.no_grad():
        if arch == "mlp":
            z, _ = fixed_latents(2000, G.z_dim, 0, EVAL_SEED)
            out = save_points(G(z.to(device)).float(), path, reference)
        else:
            k = G.num_classes
            per_row = max(1, grid_size // k) if k else None
            n = per_row * k if k else grid_size
            z, _ = fixed_latents(n, G.z_dim, 0, EVAL_SEED)
            y = torch.arange(k).repeat_interleave(per_row).to(device) if k else None
            out = save_image_grid(G(z.to(device), y).float(), path, nrow=per_row)
    G.train(was_training)
    return out
