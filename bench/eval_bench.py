"""One evaluation, the path before the metric registry against today's, part by part, side by
side in one run, with the values checked against each other and against outside references.

    .venv/bin/python bench/eval_bench.py [--n 2000 10000] [--dim 2048] [--device cpu]

Parts: generation + detector features (the mnist preset's G_ema and the LeNet detector, N
samples), feature statistics, the Fréchet distance, KID, precision/recall/density/coverage,
on 2048-d features (Inception's width; Inception itself is too slow for 10k samples on a CPU,
so the statistics, KID and PRDC run on seeded synthetic 2048-d features of the same shape).
The old path is the code this repository had before: features copied to the host as numpy,
np.cov statistics, KID in numpy float64, PRDC in float32, every metric at every evaluation.
The new default evaluation computes the distance and class/mode coverage on the device; KID
and PRDC are opt-in (eval.metrics). References: the `prdc` package (Naeem et al.) and
clean-fid's kernel_distance (KID over the whole set, so both draw the same samples).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from distgan import presets
from distgan.engine import GANEngine
from distgan.metrics import detectors
from distgan.metrics.detectors import batched_features
from distgan.metrics.evaluate import EVAL_SEED, fixed_latents
from distgan.metrics.frechet import feature_stats, frechet_distance
from distgan.metrics.kid import kid, subset_size_for
from distgan.metrics.prdc import prdc


# --- the path before the registry (as it was in this repository) -------------------------
def old_features(generate, z, y, detector, batch):
    feats, preds = [], []
    for i in range(0, len(z), batch):
        f, logits = detector(generate(z[i:i + batch], y[i:i + batch] if y is not None else None))
        feats.append(f.float().cpu().numpy())
        if logits is not None:
            preds.append(logits.argmax(1).cpu().numpy())
    return np.concatenate(feats), (np.concatenate(preds) if preds else None)


def old_stats(f):
    f = np.asarray(f, dtype=np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def old_kid(real, fake, num_subsets=100, subset_size=1000, seed=0):
    def cubic(a, b):
        k = a @ b.T
        k /= a.shape[1]
        k += 1
        cube = k * k
        cube *= k
        return cube
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    m = min(subset_size, len(real), len(fake))
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        x = fake[rng.choice(len(fake), m, replace=False)]
        y = real[rng.choice(len(real), m, replace=False)]
        kxx, kyy, kxy = cubic(x, x), cubic(y, y), cubic(x, y)
        values[i] = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                     - 2 * kxy.mean())
    return float(values.mean()), float(values.std())


def old_prdc(real, fake, k=5, chunk=1024):
    r, f = torch.as_tensor(real, dtype=torch.float32), torch.as_tensor(fake, dtype=torch.float32)

    def radius(x):
        return torch.cat([torch.cdist(x[i:i + chunk], x).kthvalue(k + 1, dim=1).values for i in range(0, len(x), chunk)])

    def counts(q, c, rad):
        return torch.cat([(torch.cdist(q[i:i + chunk], c) <= rad[None, :]).sum(1) for i in range(0, len(q), chunk)])

    r_rad, f_rad = radius(r), radius(f)
    fake_in_real, real_in_fake = counts(f, r, r_rad), counts(r, f, f_rad)
    nearest = torch.cat([torch.cdist(r[i:i + chunk], f).min(1).values for i in range(0, len(r), chunk)])
    return {"precision": float((fake_in_real > 0).float().mean()), "recall": float((real_in_fake > 0).float().mean()),
            "density": float(fake_in_real.float().sum() / (k * len(f))), "coverage": float((nearest <= r_rad).float().mean())}
# ------------------------------------------------------------------------------------------


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def synthetic(n: int, dim: int, seed: int, shift: float) -> torch.Tensor:
    """Structured, full-rank features: a random linear map of Gaussians, ReLU'd like a CNN's."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(dim // 4, dim, generator=torch.Generator().manual_seed(7)) / (dim // 4) ** 0.5
    z = torch.randn(n, dim // 4, generator=g)
    return (torch.relu(z @ basis + shift) + 0.05 * torch.randn(n, dim, generator=g)).float()


def bench(n: int, dim: int, device: torch.device) -> dict:
    cfg = presets.mnist()
    engine = GANEngine.from_config(cfg, device)
    lenet = detectors.LeNetMnist(device=device)
    z, y = fixed_latents(n, engine.latent, cfg.model.num_classes, EVAL_SEED)
    gen = lambda zb, yb: engine.generate(zb, yb).clamp(-1, 1)  # noqa: E731
    (old_f, _), t_feat_old = timed(lambda: old_features(gen, z, y, lenet, 500), device)
    (new_f, _), t_feat_new = timed(lambda: batched_features(gen, z, y, lenet, 500), device)
    real, fake = synthetic(n, dim, 1, 0.0), synthetic(n, dim, 2, 0.1)
    real_np, fake_np = real.numpy(), fake.numpy()
    real_d, fake_d = real.to(device), fake.to(device)
    (o_stats, t_stats_old) = timed(lambda: (old_stats(fake_np), old_stats(real_np)), device)
    (n_stats, t_stats_new) = timed(lambda: (feature_stats(fake_d), feature_stats(real_d)), device)
    fd_old, t_fd_old = timed(lambda: frechet_distance(*o_stats[0], *o_stats[1]), device)
    fd_new, t_fd_new = timed(lambda: frechet_distance(*n_stats[0], *n_stats[1]), device)
    m = subset_size_for(1000, n, n, 100)  # the same subsets on both sides (half the set when it has <= 1000)
    kid_old, t_kid_old = timed(lambda: old_kid(real_np, fake_np, subset_size=m), device)
    kid_new, t_kid_new = timed(lambda: kid(real_d, fake_d), device)
    prdc_old, t_prdc_old = timed(lambda: old_prdc(real_np, fake_np), device)
    prdc_new, t_prdc_new = timed(lambda: prdc(real_d, fake_d), device)
    return {"n": n, "parts": [("generation + features", t_feat_old, t_feat_new), ("statistics", t_stats_old, t_stats_new),
                              ("Fréchet distance", t_fd_old, t_fd_new), ("KID", t_kid_old, t_kid_new),
                              ("PRDC", t_prdc_old, t_prdc_new)],
            "feat_equal": float(np.abs(old_f - new_f.cpu().numpy()).max()),
            "fd": (fd_old, fd_new), "kid": (kid_old[0], kid_new[0]), "prdc": (prdc_old, prdc_new),
            "real": real_np, "fake": fake_np,
            "default_old": t_feat_old + t_stats_old + t_fd_old + t_kid_old + t_prdc_old,
            "default_new": t_feat_new + t_stats_new + t_fd_new}


def references(real: np.ndarray, fake: np.ndarray, m: int) -> dict:
    """KID over one subset of m samples (the whole set: the same samples on both sides) and
    PRDC, each against its outside reference."""
    import contextlib
    import io

    from cleanfid.fid import kernel_distance
    from prdc import compute_prdc

    ours_kid, _ = kid(real[:m], fake[:m], num_subsets=1, subset_size=m)
    ref_kid = kernel_distance(real[:m].astype(np.float64), fake[:m].astype(np.float64), num_subsets=1, max_subset_size=m)
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints its sample counts
        ref = compute_prdc(real[:m].astype(np.float64), fake[:m].astype(np.float64), nearest_k=5)
    ours = prdc(real[:m], fake[:m])
    return {"kid": (ours_kid, ref_kid), "prdc": {k: (ours[k], float(ref[k])) for k in ours}}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", nargs="+", type=int, default=[2000, 10000])
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--reference-n", type=int, default=2000, help="samples of the outside-reference checks")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, {a.dim}-d features")
    rows = []
    for n in a.n:
        r = bench(n, a.dim, device)
        rows.append(r)
        print(f"\nN = {n}")
        print(f"{'part':<22}{'old s':>9}{'new s':>9}{'old/new':>9}")
        for name, old, new in r["parts"]:
            print(f"{name:<22}{old:>9.3f}{new:>9.3f}{old / max(new, 1e-9):>9.1f}")
        print(f"{'default evaluation':<22}{r['default_old']:>9.3f}{r['default_new']:>9.3f}"
              f"{r['default_old'] / r['default_new']:>9.1f}   (old: every metric; new: distance + coverage)")
        rel = lambda a, b: abs(a - b) / max(abs(b), 1e-30)  # noqa: E731
        print(f"equal: features max |old - new| {r['feat_equal']:.2e}; FD rel {rel(*r['fd']):.2e}; "
              f"KID rel {rel(*r['kid']):.2e}; PRDC max |old - new| "
              f"{max(abs(r['prdc'][0][k] - r['prdc'][1][k]) for k in r['prdc'][1]):.2e}")
    ref = references(rows[0]["real"], rows[0]["fake"], min(a.reference_n, rows[0]["n"]))
    print(f"\nreferences at N = {min(a.reference_n, rows[0]['n'])}: KID rel to clean-fid "
          f"{abs(ref['kid'][0] - ref['kid'][1]) / abs(ref['kid'][1]):.2e}; PRDC max |ours - prdc package| "
          f"{max(abs(o - r) for o, r in ref['prdc'].values()):.2e}")
    return rows


if __name__ == "__main__":
    main()
