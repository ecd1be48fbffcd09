import os
import sys
from pathlib import Path

import lightning  # noqa: F401  (imported before any fixture captures output: its log handler keeps the stream)
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# One intra-op thread: the tests' nets are tiny, and a second thread only adds hand-offs. On a busy
# 2-core machine (a background job, another pytest) two threads made small fits 10-20x slower.
torch.set_num_threads(1)


@pytest.fixture
def run_cli(tmp_path):
    """Run ``python -m lightning_rect ...`` in a subprocess inside tmp_path; returns CompletedProcess."""
    import subprocess

    def run(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled", **(env or {})}
        return subprocess.run([sys.executable, "-m", "lightning_rect", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=timeout, env=full_env)

    return run


@pytest.fixture
def cli_in_process(tmp_path, monkeypatch, capsys):
    """Run the CLI's ``main(args)`` in this process (no interpreter start-up); returns (exit code, stderr).

    For checks that stop before training: bad values, unknown names, missing files.
    """
    from lightning_rect.app.cli import main

    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> tuple[int, str]:
        try:
            main(list(args))
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        return code, capsys.readouterr().err

    return run
