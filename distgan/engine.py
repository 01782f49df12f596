"""One GAN iteration in phases: n_D discriminator updates (each its main loss, then any due
lazy regularization step), then one generator update, then G's EMA.

No Ray and no I/O here, so the same engine runs in a plain process, in tests, and under
DDP inside a Ray Train worker (pass the DDP-wrapped G and D; rank and world size make the
latent draws of the global batch identical to a one-process run of the same global batch).

Near the hardware: the step's statistics stay on the device as tensors (the caller syncs
once per log window, not once per step), uint8 batches are normalized on the device, the
EMA is one foreach kernel, and on CUDA the options of `train` (channels-last, fused Adam,
cudnn.benchmark, torch.compile of the D and G loss computations) apply.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from distgan.augment import ada_step, augment, parse_policy
from distgan.config import ConfigError, RunConfig
from distgan.data.reader import normalize
from distgan.distributed import all_mean
from distgan.latent import Latent
from distgan.losses import build_loss
from distgan.models import build_models
from distgan.regularizers import Regularizer, build_regularizers


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper, or the module itself."""
    return getattr(module, "module", module)


def grad_norm(module: nn.Module) -> torch.Tensor:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())


def switch(value: str, device: torch.device) -> bool:
    """A train.* option's `auto` means: on for CUDA."""
    return value == "on" or (value == "auto" and device.type == "cuda")


class GANEngine:
    def __init__(self, cfg: RunConfig, G: nn.Module, D: nn.Module, device: torch.device | str = "cpu",
                 rank: int = 0, world_size: int = 1):
        self.cfg, self.device = cfg, torch.device(device)
        self.rank, self.world_size = rank, world_size
        t = cfg.train
        self.images = cfg.model.arch != "mlp"
        self.channels_last = self.images and switch(t.channels_last, self.device)
        memory = torch.channels_last if self.channels_last else torch.preserve_format
        self.G, self.D = G.to(self.device, memory_format=memory), D.to(self.device, memory_format=memory)
        self.G_ema = copy.deepcopy(unwrap(G)).eval().requires_grad_(False)
        self.loss = build_loss(cfg.loss)
        self.latent = Latent.of(cfg.model)
        self.regs = build_regularizers(cfg.loss)
        self.d_main = [r for r in self.regs if r.phase == "Dmain"]
        self.d_reg = [r for r in self.regs if r.phase == "Dreg"]
        # Lazy regularization's Adam correction (StyleGAN2): D's optimizer steps k+1 times per k
        # main steps, so its lr and betas are those of k/(k+1) as many steps.
        self.d_ratio = min((r.every / (r.every + 1) for r in self.d_reg if r.every > 1), default=1.0)
        o = cfg.optim
        fused = {"fused": True} if switch(t.fused_optim, self.device) else {}
        self.opt_g = torch.optim.Adam(G.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2), **fused)
        self.opt_d = torch.optim.Adam(D.parameters(), lr=o.lr_d * self.d_ratio,
                                      betas=(o.beta1 ** self.d_ratio, o.beta2 ** self.d_ratio), **fused)
        if self.device.type == "cuda" and switch(t.cudnn_benchmark, self.device):
            torch.backends.cudnn.benchmark = True
        # Same seed on every rank: each draws the global batch's noise and keeps its slice.
        self.noise_gen = torch.Generator(self.device).manual_seed(cfg.train.seed)
        self.step_count = self.d_updates = 0
        a = cfg.aug
        self.aug_ops = parse_policy(a.policy) if a.kind != "none" else []
        self.aug_p = torch.tensor(0.0 if a.kind == "ada" else 1.0, device=self.device)
        self.r_t_sum = torch.zeros(2, device=self.device)  # ADA: sum of sign(D(x_real)), count, since its last update
        self.reg_stats: dict[str, torch.Tensor] = {}
        use_bf16 = t.amp == "bf16" or (t.amp == "auto" and self.device.type == "cuda")
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if use_bf16 \
            else contextlib.nullcontext
        self._d_loss, self._g_loss = self._d_loss_eager, self._g_loss_eager
        if switch(t.compile, self.device):
            # A gradient penalty differentiates D's gradient (a double backward), which
            # torch.compile does not support: such a D step stays eager.
            if not any(r.double_backward for r in self.d_main):
                self._d_loss = torch.compile(self._d_loss_eager)
            self._g_loss = torch.compile(self._g_loss_eager)

    @classmethod
    def from_config(cls, cfg: RunConfig, device: torch.device | str = "cpu") -> "GANEngine":
        torch.manual_seed(cfg.train.seed)
        G, D = build_models(cfg.model)
        return cls(cfg, G, D, device)

    def _latent(self, n: int) -> torch.Tensor:
        """G's input rows: z, then any InfoGAN codes (without codes, exactly the z draws of before)."""
        return self.latent.draw(n, self._noise, self._uniform)

    def _noise(self, n: int, *shape: int, uniform: bool = False) -> torch.Tensor:
        draw = torch.rand if uniform else torch.randn
        full = draw(n * self.world_size, *shape, generator=self.noise_gen, device=self.device)
        return full[self.rank * n:(self.rank + 1) * n]

    def _uniform(self, n: int, *shape: int) -> torch.Tensor:
        return self._noise(n, *shape, uniform=True)

    def _fake(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """G's training output: a G that takes more randomness than z (StyleGAN2's noise maps
        and style mixing) draws it from the engine's stream, so DDP ranks agree."""
        extra = getattr(unwrap(self.G), "noise_dim", 0)
        return self.G(z, y, self._noise(len(z), extra)) if extra else self.G(z, y)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """What D sees of a batch (reals or fakes): the augmentation policy, differentiable."""
        if not self.aug_ops:
            return x
        return augment(x, self.aug_ops, self._uniform, 1.0 if self.cfg.aug.kind == "diffaug" else self.aug_p)

    def as_input(self, real: torch.Tensor) -> torch.Tensor:
        """A batch as D sees it: on the device, uint8 pixels to [-1, 1], channels-last images."""
        x = normalize(real.to(self.device, non_blocking=True))
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def step(self, real: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One engine step on n_D * b real rows: D sees a fresh b-row chunk per update (its main
        phase, then its regularization phase when due), then G's phase. The statistics are 0-d
        tensors on the device (no host sync)."""
        n_d = self.cfg.train.n_d
        if len(real) % n_d:
            raise ValueError(f"batch of {len(real)} rows does not split into train.n_d={n_d} D updates")
        real = self.as_input(real)
        labels = labels.to(self.device, non_blocking=True) if labels is not None and self._conditional else None
        reals = real.chunk(n_d)
        ys = labels.chunk(n_d) if labels is not None else [None] * n_d
        self.G.train()
        self.D.train()
        self._schedule()
        for x, y in zip(reals, ys):
            d_stats = self._d_update(x, y)
            for reg in self.d_reg:
                if self.d_updates % reg.every == 0:  # due at the first update, then every k
                    self.reg_stats[reg.name] = self._d_reg_update(reg, x, y)
            self.d_updates += 1
        g_stats = self._g_update(len(reals[-1]), ys[-1])
        self._update_ema()
        self.step_count += 1
        if self.cfg.aug.kind == "ada" and self.step_count % self.cfg.aug.ada_every == 0:
            self._adapt(len(real) * self.world_size)
        stats = {**d_stats, **g_stats, **self.reg_stats}
        if self.aug_ops:
            stats["aug_p"] = self.aug_p
        stats["nonfinite"] = (~torch.isfinite(stats["loss_d"]) | ~torch.isfinite(stats["loss_g"])).float()
        return {k: v.detach().float() for k, v in stats.items()}

    def _schedule(self) -> None:
        """The learning rates of this step (from the config's, so PBT's explored ones apply)."""
        o = self.cfg.optim
        scale = max(0.0, 1.0 - self.step_count / self.cfg.train.steps) if o.lr_decay == "linear" else 1.0
        for opt, lr in ((self.opt_g, o.lr_g), (self.opt_d, o.lr_d * self.d_ratio)):
            for group in opt.param_groups:
                group["lr"] = lr * scale

    def _adapt(self, rows: int) -> None:
        """ADA: move p by the r_t of the reals D saw since the last update (over all ranks)."""
        total = all_mean(self.r_t_sum)
        r_t = total[0] / total[1].clamp(min=1)
        a = self.cfg.aug
        self.aug_p = ada_step(self.aug_p, r_t, a.target, rows * a.ada_every, a.ada_kimg)
        self.r_t_sum.zero_()

    @property
    def _conditional(self) -> bool:
        return bool(unwrap(self.G).num_classes)

    def _d_loss_eager(self, real: torch.Tensor, y: torch.Tensor | None, z: torch.Tensor):
        """D's main loss on one chunk: one D forward over reals, fakes (and what the main-phase
        regularizers ask for), so one spectral-norm power iteration and one DDP reduction."""
        b = len(real)
        with torch.no_grad(), self.autocast():
            fake = self._fake(z, y).to(real.dtype)
        real, fake = self.augment(real), self.augment(fake)
        extras = [r.extra_input(real, fake, self._uniform) for r in self.d_main]
        inputs = [real, fake, *(e for e in extras if e is not None)]
        with self.autocast():
            logits, q = self._judge(torch.cat(inputs), torch.cat([y] * len(inputs)) if y is not None else None)
        real_logits, fake_logits = logits[:b], logits[b:2 * b]
        terms, at = {}, 2 * b
        if q is not None:  # Q learns to read the codes back from the fakes they made
            terms["info_d"] = self._info_loss(q[b:2 * b], z)
        for reg, extra in zip(self.d_main, extras):
            extra_logits = None
            if extra is not None:
                extra_logits, at = logits[at:at + len(extra)], at + len(extra)
            terms[reg.name] = reg.term(real_logits=real_logits, fake_logits=fake_logits, extra=extra,
                                       extra_logits=extra_logits)
        return self.loss.d_loss(real_logits, fake_logits), real_logits.detach(), fake_logits.detach(), terms

    def _info_loss(self, q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        lo = self.cfg.loss
        return self.latent.info_nll(q, z, lo.info_weight, lo.info_category_weight)

    def _judge(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's logits (fp32) and, with InfoGAN codes, its Q head's guesses of them (fp32)."""
        if not self.latent.coded:
            return self.D(x, y).float(), None
        logits, q = self.D(x, y, codes=True)
        return logits.float(), q.float()

    def _d_update(self, real: torch.Tensor, y: torch.Tensor | None) -> dict[str, torch.Tensor]:
        loss, real_logits, fake_logits, terms = self._d_loss(real, y, self._latent(len(real)))
        loss = loss + sum(terms.values())
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        stats = {k: v.detach() for k, v in terms.items()}
        stats["grad_norm_d"] = grad_norm(self.D)
        self.opt_d.step()
        signs = torch.sign(real_logits - self.loss.midpoint)
        self.r_t_sum += torch.stack([signs.sum(), signs.new_full((), len(signs))])  # no host copy
        to_prob = torch.sigmoid if self.loss.probabilistic else (lambda t: t)
        stats.update(loss_d=loss.detach(), d_real=to_prob(real_logits).mean(), d_fake=to_prob(fake_logits).mean(),
                     r_t=signs.mean())
        return stats

    def _d_reg_update(self, reg: Regularizer, real: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The Dreg phase: the regularizer's own D step, its penalty scaled by its interval.
        The penalty is on the reals as drawn, through the augmentation D sees them with."""
        x = real.detach().requires_grad_(True)
        with self.autocast():
            logits, q = self._judge(self.augment(x), y)
        penalty = reg.penalty(x, logits)
        self.opt_d.zero_grad(set_to_none=True)
        # + 0 * logits (as stylegan2-ada): D's last bias (and a Q head) has no say in its input
        # gradient, and DDP requires every parameter in the backward.
        unused = 0 * logits.mean() + (0 * q.mean() if q is not None else 0)
        (penalty * reg.every + unused).backward()
        self.opt_d.step()
        return penalty.detach()

    def _g_loss_eager(self, z: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """G's loss, and with InfoGAN codes the Q head's NLL of them (G keeps them readable)."""
        with self.autocast():
            logits, q = self._judge(self.augment(self._fake(z, y)), y)
        loss = self.loss.g_loss(logits)
        if q is None:
            return loss, None
        return loss + self._info_loss(q, z), self.latent.info_nll(q.detach(), z)

    def _g_update(self, b: int, y: torch.Tensor | None) -> dict[str, torch.Tensor]:
        D = unwrap(self.D)
        D.requires_grad_(False)  # G's backward needs dL/dx through D, not D's weight gradients
        no_sync = self.D.no_sync() if hasattr(self.D, "no_sync") else contextlib.nullcontext()
        try:
            with no_sync:
                loss, nll = self._g_loss(self._latent(b), y)
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
        finally:
            D.requires_grad_(True)
        gn = grad_norm(self.G)
        self.opt_g.step()
        return {"loss_g": loss.detach(), "grad_norm_g": gn, **({"info_nll": nll.detach()} if nll is not None else {})}

    @torch.no_grad()
    def _update_ema(self) -> None:
        # Warm-up (as TF's ExponentialMovingAverage with num_updates) so short runs are not stuck at init.
        decay = min(self.cfg.train.ema, (1 + self.step_count) / (10 + self.step_count))
        G = unwrap(self.G)
        torch._foreach_lerp_(list(self.G_ema.parameters()), list(G.parameters()), 1 - decay)
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
                "opt_d": self.opt_d.state_dict(), "step": self.step_count, "rng": rng,
                "d_updates": self.d_updates, "aug": {"p": self.aug_p, "r_t_sum": self.r_t_sum},
                "regs": {r.name: r.state_dict() for r in self.regs}, "reg_stats": dict(self.reg_stats)}

    def load_state_dict(self, state: dict) -> None:
        unwrap(self.G).load_state_dict(state["G"])
        unwrap(self.D).load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step_count = int(state["step"])
        # Checkpoints older than the phases hold none of these: their runs had no augmentation or lazy terms.
        self.d_updates = int(state.get("d_updates", self.step_count * self.cfg.train.n_d))
        if "aug" in state:
            self.aug_p = state["aug"]["p"].to(self.device)
            self.r_t_sum = state["aug"]["r_t_sum"].to(self.device)
        for reg in self.regs:
            reg.load_state_dict(state.get("regs", {}).get(reg.name) or reg.state_dict())
        self.reg_stats = {k: v.to(self.device) for k, v in state.get("reg_stats", {}).items()}
        self.noise_gen.set_state(state["rng"]["noise"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])


def pick_device(device: str | None) -> torch.device:
    """--device as given (cpu, cuda[:N]), else CUDA when there is one."""
    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise ConfigError(f"--device {device}: expected cpu or cuda[:N]") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device}: expected cpu or cuda[:N]")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device here")
    return dev
