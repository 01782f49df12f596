"""Named full configurations. `mnist_smoke` runs in seconds on a laptop CPU and is what
the tests and the README's examples use; the GPU presets are sized for one modern GPU."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from distgan.config import (AugConfig, ConfigError, DataConfig, EvalConfig, LossConfig, ModelConfig, OptimConfig, RunConfig,
                            TrainConfig, parse_set)


def mnist_smoke() -> RunConfig:
    return RunConfig(
        data=DataConfig(builtin="mnist-embedded"),
        model=ModelConfig(resolution=28, channels=1, z_dim=32, g_width=16, d_width=16, conditional=True),
        train=TrainConfig(steps=20, batch_size=32, eval_every=10, ema=0.9),
        eval=EvalConfig(num_samples=500, batch_size=250, grid_size=40),
    )


def mnist() -> RunConfig:
    return RunConfig(
        data=DataConfig(builtin="mnist-embedded"),
        model=ModelConfig(resolution=28, channels=1, z_dim=64, g_width=32, d_width=32, conditional=True),
        optim=OptimConfig(lr_g=2e-4, lr_d=2e-4, beta1=0.5),
        train=TrainConfig(steps=1500, batch_size=64, eval_every=250, ema=0.995),
        eval=EvalConfig(num_samples=2000, batch_size=500, grid_size=100),
    )


def ring8() -> RunConfig:
    return RunConfig(
        data=DataConfig(builtin="ring8"),
        model=ModelConfig(arch="mlp", resolution=2, z_dim=16, g_width=128, d_width=128, sn_d=True,
                          d_input_gain=20.0),
        # beta1 0: with 0.5, 4 of 10 seeds collapsed into one blob between the modes (bench/ring8_seeds.py)
        optim=OptimConfig(lr_g=1e-3, lr_d=1e-3, beta1=0.0, beta2=0.99),
        train=TrainConfig(steps=6000, batch_size=256, eval_every=1000, ema=0.99),
        eval=EvalConfig(num_samples=2000, batch_size=2000, detector="coords"),
    )


def grid25() -> RunConfig:
    cfg = ring8()
    cfg.data.builtin = "grid25"
    cfg.optim.beta1 = 0.5  # no seed of 10 collapses here, and 0.5 covers more modes than 0 (bench/ring8_seeds.py)
    return cfg


def cifar10_dcgan() -> RunConfig:
    return RunConfig(
        data=DataConfig(path="data/cifar10"),
        model=ModelConfig(resolution=32, channels=3, z_dim=128, g_width=64, d_width=64, conditional=True,
                          num_classes=10),
        optim=OptimConfig(lr_g=2e-4, lr_d=2e-4, beta1=0.0, beta2=0.9),
        loss=LossConfig(kind="hinge"),
        train=TrainConfig(steps=50000, batch_size=128, n_d=2, eval_every=5000, ema=0.999),
        eval=EvalConfig(num_samples=10000, detector="inception", batch_size=500),
    )


def celeba64() -> RunConfig:
    return RunConfig(
        data=DataConfig(path="data/celeba64"),
        model=ModelConfig(resolution=64, channels=3, z_dim=128, g_width=64, d_width=64, num_classes=1),
        optim=OptimConfig(lr_g=2e-4, lr_d=2e-4, beta1=0.0, beta2=0.9),
        loss=LossConfig(kind="hinge"),
        train=TrainConfig(steps=100000, batch_size=128, n_d=1, eval_every=5000, ema=0.999),
        eval=EvalConfig(num_samples=10000, detector="inception", batch_size=500),
    )


def cifar10_resnet() -> RunConfig:
    """SNGAN's CIFAR-10 setup (ResNet G and D, hinge, n_D 5, Adam(0, 0.9)) with a projection D
    and DiffAugment."""
    return RunConfig(
        data=DataConfig(path="data/cifar10"),
        model=ModelConfig(arch="resnet", resolution=32, channels=3, z_dim=128, g_width=64, d_width=128,
                          conditional=True, cond="cbn", num_classes=10),
        optim=OptimConfig(lr_g=2e-4, lr_d=2e-4, beta1=0.0, beta2=0.9),
        loss=LossConfig(kind="hinge"),
        aug=AugConfig(kind="diffaug", policy="translation,cutout,color"),
        train=TrainConfig(steps=50000, batch_size=64, n_d=5, eval_every=5000, ema=0.9999),
        eval=EvalConfig(num_samples=10000, detector="inception", batch_size=500),
    )


def celeba64_resnet() -> RunConfig:
    return RunConfig(
        data=DataConfig(path="data/celeba64"),
        model=ModelConfig(arch="resnet", resolution=64, channels=3, z_dim=128, g_width=64, d_width=64,
                          num_classes=1, attention=True),
        optim=OptimConfig(lr_g=2e-4, lr_d=2e-4, beta1=0.0, beta2=0.9),
        loss=LossConfig(kind="hinge"),
        train=TrainConfig(steps=100000, batch_size=64, n_d=2, eval_every=5000, ema=0.999),
        eval=EvalConfig(num_samples=10000, detector="inception", batch_size=500),
    )


def celeba64_stylegan2() -> RunConfig:
    """StyleGAN2's recipe at 64 px: ns loss, lazy R1, Adam(0, 0.99) at 2.5e-3 (the
    equalized learning rate), style mixing, ADA."""
    return RunConfig(
        data=DataConfig(path="data/celeba64"),
        model=ModelConfig(arch="stylegan2", resolution=64, channels=3, z_dim=256, g_width=32, d_width=64,
                          num_classes=1, sn_d=False),
        optim=OptimConfig(lr_g=2.5e-3, lr_d=2.5e-3, beta1=0.0, beta2=0.99),
        loss=LossConfig(kind="ns", r1_gamma=0.25, r1_every=16),
        aug=AugConfig(kind="ada", policy="translation,cutout,color"),
        train=TrainConfig(steps=100000, batch_size=64, eval_every=5000, ema=0.999),
        eval=EvalConfig(num_samples=10000, detector="inception", batch_size=500),
    )


def mnist_resnet_smoke() -> RunConfig:
    """The ResNet family on the embedded digits, sized for a CPU test (a few seconds)."""
    cfg = mnist_smoke()
    cfg.model = ModelConfig(arch="resnet", resolution=28, channels=1, z_dim=32, g_width=8, d_width=8,
                            conditional=True, cond="cbn", attention=True)
    cfg.loss, cfg.aug = LossConfig(kind="hinge"), AugConfig(kind="diffaug")
    return cfg


def mnist_stylegan2_smoke() -> RunConfig:
    """The StyleGAN2-style G and ResNet D on the embedded digits, sized for a CPU test."""
    cfg = mnist_smoke()
    cfg.model = ModelConfig(arch="stylegan2", resolution=28, channels=1, z_dim=32, g_width=4, d_width=8,
                            conditional=True, sn_d=False, mapping_layers=2)
    cfg.optim = OptimConfig(lr_g=2.5e-3, lr_d=2.5e-3, beta1=0.0, beta2=0.99)
    cfg.loss, cfg.aug = LossConfig(r1_gamma=1.0, r1_every=4), AugConfig(kind="ada", ada_every=1)
    return cfg


PRESETS: dict[str, Callable[[], RunConfig]] = {
    f.__name__: f for f in (mnist_smoke, mnist, ring8, grid25, cifar10_dcgan, celeba64, cifar10_resnet,
                            celeba64_resnet, celeba64_stylegan2, mnist_resnet_smoke, mnist_stylegan2_smoke)
}


def get(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"--preset {name!r}: unknown, expected one of {sorted(PRESETS)}")
    return PRESETS[name]().validate()


def load(preset: str | None = None, config_file: str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """The CLI's config: a preset or a YAML/JSON file, then --set overrides."""
    if preset and config_file:
        raise ConfigError("--preset and --config: give one of them")
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"--config {config_file}: no such file")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"--config {config_file}{where}: not valid YAML "
                              f"({getattr(e, 'problem', None) or type(e).__name__})") from None
        cfg = RunConfig.from_dict(raw)
    else:
        cfg = get(preset or "mnist")
    return cfg.with_overrides(parse_set(overrides or []))
