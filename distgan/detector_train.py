"""Train the LeNet domain detector on the embedded MNIST (`distgan detector train`).

Fixed seed, a held-out fifth of the digits for the accuracy that ships with the weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from distgan.data.reader import load_all
from distgan.data.schema import DataError
from distgan.metrics.detectors import file_sha256
from distgan.models.lenet import LeNet


def _shift(x: torch.Tensor, g: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translations: the cheapest augmentation that helps on 4,000 training digits."""
    dx, dy = (torch.randint(-max_shift, max_shift + 1, (2,), generator=g)).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def train_lenet(data_dir: str | Path, out: str | Path, epochs: int = 12, seed: int = 0, batch: int = 64,
                command: str = "") -> dict:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y, info = load_all(data_dir)
    if tuple(x.shape[1:]) != (1, 28, 28):
        raise DataError(f"{data_dir}: the LeNet detector needs 28x28x1 images, got {tuple(x.shape[1:])}")
    perm = torch.randperm(len(x), generator=g)
    n_val = len(x) // 5
    val, tr = perm[:n_val], perm[n_val:]
    net = LeNet(info.num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * (len(tr) // batch))
    for _ in range(epochs):
        net.train()
        order = tr[torch.randperm(len(tr), generator=g)]
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i:i + batch]
            loss = F.cross_entropy(net(_shift(x[idx], g))[1], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        acc = (net(x[val])[1].argmax(1) == y[val]).float().mean().item()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out)
    card = {"heldout_accuracy": round(acc, 4), "heldout_size": n_val, "train_size": len(tr), "epochs": epochs,
            "seed": seed, "sha256_12": file_sha256(out)[:12], "command": command,
            "torch": torch.__version__}
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return card
