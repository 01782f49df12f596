"""distgan: distributed GAN training and FID-driven hyperparameter search.

The Python API (distgan.api) is exported here and imported on first use, so `import distgan`
(and the command line's --help) stays light: tune, resume, status, train, promote, sample,
and ConfigError, the one-line error every bad input raises."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("distgan")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = ["ConfigError", "promote", "resume", "sample", "status", "train", "tune"]


def __getattr__(name: str):
    if name == "ConfigError":
        from distgan.config import ConfigError

        return ConfigError
    if name in __all__:
        from distgan import api

        return getattr(api, name)
    raise AttributeError(f"module 'distgan' has no attribute {name!r}")
