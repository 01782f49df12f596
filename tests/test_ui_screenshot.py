"""bench/ui_screenshot.py drives a real headless Chromium against a real MLflow server and
the page lists a tuning job's runs (skipped where no Chromium is installed)."""

import importlib.util
from pathlib import Path

import pytest
from mlflow import MlflowClient
from PIL import Image

from distgan import tracking

BENCH = Path(__file__).resolve().parent.parent / "bench" / "ui_screenshot.py"


def _script():
    spec = importlib.util.spec_from_file_location("ui_screenshot", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(300)
def test_the_screenshot_shows_the_jobs_runs(mlflow_server, tmp_path):
    ui = _script()
    if ui.find_browser() is None:
        pytest.skip("no Chromium on this machine (Debian: apt install chromium)")
    pytest.importorskip("playwright.sync_api")
    c = MlflowClient(mlflow_server)
    exp = c.create_experiment("ui-shot")
    parent = c.create_run(exp, tags={tracking.KIND: "tuning-job", tracking.JOB: "shotjob",
                                     tracking.DISTANCE: "fd_lenet2k"}, run_name="shotjob").info.run_id
    for trial, curve in (("aaaa0001", [900.0, 300.0, 120.0]), ("bbbb0002", [1500.0, 800.0, 400.0])):
        child = c.create_run(exp, tags={tracking.PARENT: parent, tracking.TRIAL: trial},
                             run_name=f"trial-{trial}").info.run_id
        for step, value in zip((500, 1000, 1500), curve):
            c.log_metric(child, "fd_lenet2k", value, step=step)
        c.log_metric(child, tracking.BEST, min(curve))
    out = tmp_path / "ui.png"
    text = ui.main(["--url", mlflow_server, "--experiment", "ui-shot", "--out", str(out)])
    assert "shotjob" in text and "trial-aaaa0001" in text and "trial-bbbb0002" in text
    with Image.open(out) as im:
        assert im.width == 1400 and im.height > 1000
