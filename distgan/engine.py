"""One GAN iteration: n_D discriminator updates, then one generator update, then G's EMA.

No Ray and no I/O here, so the same engine runs in a plain process, in tests, and under
DDP inside a Ray Train worker (pass the DDP-wrapped G and D; rank and world size make the
latent draws of the global batch identical to a one-process run of the same global batch).
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from distgan.config import RunConfig
from distgan.losses import build_loss
from distgan.models import build_models


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper, or the module itself."""
    return getattr(module, "module", module)


def grad_norm(module: nn.Module) -> torch.Tensor:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())


class GANEngine:
    def __init__(self, cfg: RunConfig, G: nn.Module, D: nn.Module, device: torch.device | str = "cpu",
                 rank: int = 0, world_size: int = 1):
        self.cfg, self.device = cfg, torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.G, self.D = G.to(self.device), D.to(self.device)
        self.G_ema = copy.deepcopy(unwrap(G)).eval().requires_grad_(False)
        self.loss = build_loss(cfg.loss)
        o = cfg.optim
        self.opt_g = torch.optim.Adam(G.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2))
        self.opt_d = torch.optim.Adam(D.parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2))
        # Same seed on every rank: each draws the global batch's noise and keeps its slice.
        self.noise_gen = torch.Generator(self.device).manual_seed(cfg.train.seed)
        self.step_count = 0
        use_bf16 = cfg.train.amp == "bf16" or (cfg.train.amp == "auto" and self.device.type == "cuda")
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if use_bf16 \
            else contextlib.nullcontext

    @classmethod
    def from_config(cls, cfg: RunConfig, device: torch.device | str = "cpu") -> "GANEngine":
        torch.manual_seed(cfg.train.seed)
        G, D = build_models(cfg.model)
        return cls(cfg, G, D, device)

    @property
    def z_dim(self) -> int:
        return unwrap(self.G).z_dim

    def _noise(self, n: int, *shape: int, uniform: bool = False) -> torch.Tensor:
        draw = torch.rand if uniform else torch.randn
        full = draw(n * self.world_size, *shape, generator=self.noise_gen, device=self.device)
        return full[self.rank * n:(self.rank + 1) * n]

    def step(self, real: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        """One engine step on n_D * b real rows: D sees a fresh b-row chunk per update."""
        n_d = self.cfg.train.n_d
        if len(real) % n_d:
            raise ValueError(f"batch of {len(real)} rows does not split into train.n_d={n_d} D updates")
        real = real.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True) if labels is not None and self._conditional else None
        reals = real.chunk(n_d)
        ys = labels.chunk(n_d) if labels is not None else [None] * n_d
        self.G.train()
        self.D.train()
        for x, y in zip(reals, ys):
            d_stats = self._d_update(x, y)
        g_stats = self._g_update(len(reals[-1]), ys[-1])
        self._update_ema()
        self.step_count += 1
        stats = {**d_stats, **g_stats}
        stats["nonfinite"] = (~torch.isfinite(stats["loss_d"]) | ~torch.isfinite(stats["loss_g"])).float()
        return dict(zip(stats, torch.stack([v.detach().float() for v in stats.values()]).tolist()))

    @property
    def _conditional(self) -> bool:
        return bool(unwrap(self.G).num_classes)

    def _d_update(self, real: torch.Tensor, y: torch.Tensor | None) -> dict[str, torch.Tensor]:
        b = len(real)
        with torch.no_grad(), self.autocast():
            fake = self.G(self._noise(b, self.z_dim), y).to(real.dtype)
        # One D forward per update: one spectral-norm power iteration, one DDP reduction.
        inputs, yy = [real, fake], [y, y]
        if self.loss.needs_penalty:
            eps = self._noise(b, *[1] * (real.dim() - 1), uniform=True)
            interp = (eps * real + (1 - eps) * fake).requires_grad_(True)
            inputs.append(interp)
            yy.append(y)
        with self.autocast():
            logits = self.D(torch.cat(inputs), torch.cat(yy) if y is not None else None).float()
        real_logits, fake_logits = logits[:b], logits[b:2 * b]
        loss = self.loss.d_loss(real_logits, fake_logits)
        stats = {}
        if self.loss.needs_penalty:
            gp = self.loss.penalty(interp, logits[2 * b:])
            loss = loss + gp
            stats["gp"] = gp.detach()
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        stats["grad_norm_d"] = grad_norm(self.D)
        self.opt_d.step()
        to_prob = torch.sigmoid if self.loss.probabilistic else (lambda t: t)
        stats.update(loss_d=loss.detach(), d_real=to_prob(real_logits.detach()).mean(),
                     d_fake=to_prob(fake_logits.detach()).mean())
        return stats

    def _g_update(self, b: int, y: torch.Tensor | None) -> dict[str, torch.Tensor]:
        D = unwrap(self.D)
        D.requires_grad_(False)  # G's backward needs dL/dx through D, not D's weight gradients
        no_sync = self.D.no_sync() if hasattr(self.D, "no_sync") else contextlib.nullcontext()
        try:
            with no_sync, self.autocast():
                logits = self.D(self.G(self._noise(b, self.z_dim), y), y).float()
            loss = self.loss.g_loss(logits)
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
        finally:
            D.requires_grad_(True)
        gn = grad_norm(self.G)
        self.opt_g.step()
        return {"loss_g": loss.detach(), "grad_norm_g": gn}

    @torch.no_grad()
    def _update_ema(self) -> None:
        # Warm-up (as TF's ExponentialMovingAverage with num_updates) so short runs are not stuck at init.
        decay = min(self.cfg.train.ema, (1 + self.step_count) / (10 + self.step_count))
        G = unwrap(self.G)
        for p_ema, p in zip(self.G_ema.parameters(), G.parameters()):
            p_ema.lerp_(p, 1 - decay)
        for b_ema, b in zip(self.G_ema.buffers(), G.buffers()):
            b_ema.copy_(b)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, y: torch.Tensor | None = None, ema: bool = True) -> torch.Tensor:
        G = self.G_ema if ema else unwrap(self.G)
        was_training = G.training
        G.eval()
        with self.autocast():
            out = G(z.to(self.device), y.to(self.device) if y is not None else None).float()
        G.train(was_training)
        return out

    def state_dict(self) -> dict:
        rng = {"noise": self.noise_gen.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"G": unwrap(self.G).state_dict(), "D": unwrap(self.D).state_dict(),
                "G_ema": self.G_ema.state_dict(), "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(), "step": self.step_count, "rng": rng}

    def load_state_dict(self, state: dict) -> None:
        unwrap(self.G).load_state_dict(state["G"])
        unwrap(self.D).load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step_count = int(state["step"])
        self.noise_gen.set_state(state["rng"]["noise"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
