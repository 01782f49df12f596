from __future__ import annotations

from pathlib import Path

import pytest

from distgan.data import prepare


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    """The embedded MNIST as Parquet, prepared once per session."""
    d = tmp_path_factory.mktemp("data") / "mnist"
    prepare.mnist_embedded(d)
    return d


@pytest.fixture(scope="session")
def ring8_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data") / "ring8"
    prepare.mixture("ring8", d, n=20000, seed=0)
    return d


def pytest_collection_modifyitems(items):
    """Tests that start their own Ray cluster run last: two Ray instances on one machine
    confuse Train's clean-up actors, so those tests stop the session's Ray first."""
    items.sort(key=lambda item: item.get_closest_marker("cluster") is not None)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Reference statistics go to a session-private cache, never the user's ~/.cache."""
    monkeypatch.setenv("DISTGAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole session (a Train run costs ~20 s of start-up;
    two Ray instances on one machine confuse Train V2's cleanup)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` process on a free loopback port (SQLite store, served artifacts)."""
    from distgan import tracking

    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    with tracking.served(f"sqlite:///{db}") as url:
        yield url
