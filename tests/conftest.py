from __future__ import annotations

import logging
import os
from dataclasses import dataclass
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


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])


@pytest.fixture(scope="session")
def s3():
    """A real S3-compatible server (moto's server mode) on 127.0.0.1 for the whole session,
    with one bucket. Its endpoint goes into the standard AWS_ENDPOINT_URL (pyarrow and boto3
    read it) before Ray starts, so Ray's workers reach the same store; MLflow's S3 artifact
    store reads MLFLOW_S3_ENDPOINT_URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "MLFLOW_S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3").create_bucket(Bucket="distgan-test")
    yield S3(endpoint, "distgan-test")
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def ray_session(s3):
    """One local Ray instance for the whole session (a Train run costs ~20 s of start-up;
    two Ray instances on one machine confuse Train V2's cleanup). A new one, never a stale
    cluster recorded in /tmp/ray; started after the S3 server so its workers reach it."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=True, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` process on a free loopback port (SQLite store, served artifacts)."""
    from distgan import tracking

    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    with tracking.served(f"sqlite:///{db}") as url:
        yield url
