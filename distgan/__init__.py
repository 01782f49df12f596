"""distgan: distributed GAN training and FID-driven hyperparameter search."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("distgan")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
