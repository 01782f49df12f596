"""Ray nodes the cluster tests start by hand, and how they end."""

import os
import signal
import subprocess


def kill(node: subprocess.Popen) -> None:
    """SIGKILL a `ray start --block` node's process group (that node only, all of it). A
    head given SIGTERM outlived server.stop's 15 s grace every time and was killed then."""
    try:
        os.killpg(node.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    node.wait(timeout=30)
