"""A picture of the MLflow UI after a tuning job (README's), taken by a real headless browser
(Chromium through playwright) against a real MLflow server: the experiment's runs (the job's
parent run and its trials) above a trial's distance curve.

    .venv/bin/python bench/ui_screenshot.py --url http://127.0.0.1:5000 [--experiment distgan] [--out docs/mlflow_ui.png]

Needs a Chromium (Debian: apt install chromium); nothing is downloaded. Prints the text the
runs page shows, so a test can check the job's runs are listed.
"""

from __future__ import annotations

import argparse
import io
import shutil
from pathlib import Path

from PIL import Image

CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def find_browser() -> str | None:
    return next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).is_file()), None)


def job_runs(url: str, experiment: str) -> tuple[str, dict, list]:
    """The experiment id, the newest tuning job's parent run, and its trials (best first)."""
    from mlflow import MlflowClient

    from distgan import tracking

    c = MlflowClient(url)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"{url}: no experiment {experiment!r}")
    parents = c.search_runs([exp.experiment_id], f"tags.`{tracking.KIND}` = 'tuning-job'", max_results=1,
                            order_by=["attributes.start_time DESC"])
    if not parents:
        raise SystemExit(f"{url}: no tuning job in experiment {experiment!r}")
    children = sorted(tracking.child_runs(c, exp.experiment_id, parents[0].info.run_id),
                      key=lambda r: r.data.metrics.get(tracking.BEST, float("inf")))
    return exp.experiment_id, parents[0], children


def shoot(url: str, experiment: str, out: Path, browser: str, width: int = 1400) -> str:
    from playwright.sync_api import sync_playwright

    exp_id, parent, children = job_runs(url, experiment)
    champion = children[0].info.run_id if children else parent.info.run_id
    with sync_playwright() as p:
        chrome = p.chromium.launch(executable_path=browser, args=CHROMIUM_ARGS)
        page = chrome.new_page(viewport={"width": width, "height": 760})
        # MLflow 3 opens an experiment in its GenAI mode, with a tip over it: the runs of model
        # training are one click away
        page.goto(f"{url}/#/experiments/{exp_id}", wait_until="load")
        page.wait_for_timeout(3000)
        _click(page.get_by_text("Got it"))
        _click(page.get_by_text("Model training"))
        page.goto(f"{url}/#/experiments/{exp_id}/runs", wait_until="load")
        page.get_by_text(parent.info.run_name).first.wait_for(timeout=30000)
        _click(page.get_by_role("button", name="Close"))  # the assistant's panel
        row = page.get_by_text(parent.info.run_name).first.locator("xpath=ancestor::div[contains(@class,'ag-cell')][1]")
        _click(row.locator("button[data-component-id*='runnamecellrenderer']"))  # the trials under the job
        page.wait_for_timeout(1500)
        runs_png = page.screenshot()
        text = page.inner_text("body")
        page.goto(f"{url}/#/experiments/{exp_id}/runs/{champion}/model-metrics", wait_until="load")
        page.wait_for_timeout(5000)
        curve_png = page.screenshot()
        chrome.close()
    top, bottom = Image.open(io.BytesIO(runs_png)), Image.open(io.BytesIO(curve_png))
    both = Image.new("RGB", (width, top.height + bottom.height), "white")
    both.paste(top, (0, 0))
    both.paste(bottom, (0, top.height))
    out.parent.mkdir(parents=True, exist_ok=True)
    both.save(out)
    return text


def _click(locator) -> None:
    if locator.count():
        locator.first.click(timeout=10000)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:5000")
    p.add_argument("--experiment", default="distgan")
    p.add_argument("--out", default="docs/mlflow_ui.png")
    p.add_argument("--browser", default=find_browser())
    a = p.parse_args(argv)
    if not a.browser:
        raise SystemExit("no Chromium found (Debian: apt install chromium), or give --browser")
    text = shoot(a.url.rstrip("/"), a.experiment, Path(a.out), a.browser)
    print(text)
    print(f"wrote {a.out}")
    return text


if __name__ == "__main__":
    main()
