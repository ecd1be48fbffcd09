"""``python -m lightning_rect ...`` in a child process, for tests that kill it or read what it printed."""

import os
import subprocess
import sys
from pathlib import Path


def start(cwd: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """Start the CLI in ``cwd`` (W&B off, unbuffered, one torch thread as in the test's own process, so
    that its numbers equal an in-process run's); stdout and stderr go to one pipe."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "lightning_rect", *args],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for ``proc``; its output, after checking it exited 0."""
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out
