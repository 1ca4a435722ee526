"""Stopping the servers the tests start (webserver, code servers): their whole process group."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the process group of `proc` (started with start_new_session=True), then SIGKILL it if it has not exited
    within `timeout` s: a slow shutdown on a loaded machine is not what the tests check, and no server outlives them."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
