"""What a person reads on the console of a distgan command: distgan's own lines, the live
table and errors. Ray's, Tune's, Optuna's and matplotlib's chatter (start-up banners, INFO
lines, deprecation and experimental warnings, whatever Ray's workers print) is off, unless
`--verbose` or DISTGAN_DEBUG=1 asks for it; Ray's log files keep what they always do.
distgan's own lines come from its drivers, never through Ray's log forwarding.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings

VERBOSE_ENV = "DISTGAN_VERBOSE"

#: Set before Ray starts, so the processes of a local Ray instance inherit them.
QUIET_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",  # Tune's configuration box, results path and TensorBoard hint
    "RAY_DEDUP_LOGS": "0",  # Ray folds lines that differ only in numbers ("[repeated Nx]"): every evaluation
    "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning",  # Ray Data's, in its workers
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # "View run at ..." when a run ends
}
QUIET_LOGGERS = ("ray", "ray.tune", "ray.train", "ray.data", "optuna", "matplotlib", "mlflow")
#: Tune's ERROR lines for a failed trial (its traceback, "Trials did not complete"): the job
#: names each failed trial itself, in one line with its error and its error file.
TRIAL_ERROR_LOGGERS = ("ray.tune.execution.tune_controller", "ray.tune.tune")


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1" or os.environ.get("DISTGAN_DEBUG") == "1"


def quiet() -> None:
    """Called by the command line and by each distgan.api call that starts Ray or MLflow work,
    before it imports Ray (DISTGAN_VERBOSE=1 keeps the libraries' output)."""
    if verbose():
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    quiet_loggers()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", module=r"(ray|optuna|matplotlib)(\.|$)")  # their UserWarnings
    warnings.filterwarnings("ignore", message=r".* is experimental")  # optuna's ExperimentalWarning


def quiet_loggers() -> None:
    """Again after the libraries configured their loggers (ray.init and optuna's first use
    set theirs to INFO)."""
    if verbose():
        return
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in TRIAL_ERROR_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def hush_stderr():
    """For a call that prints its progress to stderr itself (MLflow's model registration)."""
    return contextlib.nullcontext() if verbose() else contextlib.redirect_stderr(io.StringIO())


def ray_logging_level() -> int:
    return logging.INFO if verbose() else logging.ERROR
