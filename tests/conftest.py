import contextlib
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """Where tests run (not in pytest-xdist's controller, which only hands them out: torch and Lightning
    would cost it about 5 s before any worker starts), torch and Lightning are imported first."""
    if getattr(config, "workerinput", None) is None and config.getoption("numprocesses", default=None):
        return
    import lightning  # noqa: F401  (imported before any fixture captures output: its log handler keeps the stream)
    import torch

    # One intra-op thread: the tests' nets are tiny, and a second thread only adds hand-offs. On a busy
    # 2-core machine (a background job, another pytest) two threads made small fits 10-20x slower.
    torch.set_num_threads(1)


@pytest.fixture
def run_cli(tmp_path):
    """Run ``python -m lightning_rect ...`` in a subprocess inside tmp_path; returns CompletedProcess."""
    import subprocess

    def run(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
        full_env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "WANDB_MODE": "disabled",
            "OMP_NUM_THREADS": "1",
            **(env or {}),
        }  # one torch thread, as in this process
        return subprocess.run(
            [sys.executable, "-m", "lightning_rect", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
        )

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


@dataclass(frozen=True)
class FinishedRun:
    """A finished ``lightning_rect fit`` run: where it ran, its log folder, what it printed."""

    cwd: Path  #: the working directory it ran in (its paths in results.json are relative to it)
    folder: Path  #: runs/digits/version_0: results.json, metrics.csv, config.yaml, firing_rates.json, summary.png
    args: tuple[str, ...]  #: the command line after ``lightning_rect``
    stdout: str
    stderr: str

    @property
    def results(self) -> dict:
        return json.loads((self.folder / "results.json").read_text())

    @property
    def checkpoint(self) -> Path:
        """The kept (best) checkpoint that the test stage used."""
        return self.cwd / self.results["checkpoint"]


#: The shared run: the digits config with one layer of 16 units, 2 epochs (about 3 s in-process).
FINISHED_RUN_ARGS = (
    "fit",
    "--config",
    str(ROOT / "configs" / "digits.yaml"),
    "--model.init_args.hidden_sizes=[16]",
    "--trainer.max_epochs=2",
    "--trainer.enable_progress_bar=false",
)


def run_in_process(cwd: Path, *args: str) -> tuple[str, str]:
    """The CLI's ``main(args)`` in this process, run from ``cwd``: (stdout, stderr). A non-zero exit fails
    the test. For runs whose process is not the subject (a reference run, a resume): an interpreter
    start-up costs about 4.5 s of CPU, which would be most of such a run."""
    import torch

    from lightning_rect.app.cli import main

    out, err = io.StringIO(), io.StringIO()
    threads, here, argv = torch.get_num_threads(), os.getcwd(), sys.argv
    try:
        os.chdir(cwd)
        sys.argv = [sys.argv[0]]  # LightningCLI(args=...) warns when sys.argv holds pytest's arguments too
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(list(args))
    except SystemExit as exit_:
        raise AssertionError(f"exit code {exit_.code}: {err.getvalue()[-3000:]}") from None
    finally:
        os.chdir(here)
        sys.argv = argv
        torch.set_num_threads(threads)
    return out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> FinishedRun:
    """ONE tiny digits fit per test session, run in this process, for the tests that only read a
    finished run's files or output. Read it, never write into it (copy it to tmp_path first)."""
    cwd = tmp_path_factory.mktemp("finished_run")
    out, err = run_in_process(cwd, *FINISHED_RUN_ARGS)
    [folder] = sorted((cwd / "runs" / "digits").glob("version_*"))
    return FinishedRun(cwd, folder, FINISHED_RUN_ARGS, out, err)


@pytest.fixture
def no_summary_figures(monkeypatch):
    """In-process fits skip drawing summary.png (about 1-3 s each on 2 busy cores; tests/test_plots.py
    checks the figure). Returns the folders a figure would have been drawn for."""
    from lightning_rect.app.plots import summary

    skipped: list[Path] = []
    monkeypatch.setattr(summary, "write_summary_figure", lambda folder, *args, **kwargs: skipped.append(Path(folder)))
    return skipped
