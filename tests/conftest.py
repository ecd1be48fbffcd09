import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# Tests share 2 cores with nothing else; one intra-op thread keeps timings stable.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def run_cli(tmp_path):
    """Run ``python -m lightning_rect ...`` in a subprocess inside tmp_path; returns CompletedProcess."""
    import subprocess

    def run(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled", **(env or {})}
        return subprocess.run([sys.executable, "-m", "lightning_rect", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=timeout, env=full_env)

    return run
