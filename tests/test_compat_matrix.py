"""The package as a pip user gets it: built into a wheel, installed outside the checkout (``pip install
--no-deps --target``, once for this file), run from folders that have no configs/ of their own. First the
README's pip-user command, then the compatibility matrix (``tests/compat/matrix.py``): every Lightning
contract (row) against every part of the package (column).

Three launches then run every cell at the same time, each from a folder outside the checkout with
``PYTHONPATH=<the install>``: ``run_cells.py --group single`` runs the one-process cells in one process,
``run_cells.py --group spawn`` the ``ddp_spawn`` row (5 launches of 2 processes: the SparseMLP and
hand-off cells share one), ``ddp_cells.py`` the ``ddp`` row (one launch of 2 processes). Each writes
its cells' outcomes as JSON; one test per cell compares the outcome with the declared one: ``works``
(its check asserted its values), the exact one-line refusal, or ``needs <package>`` where the row's
optional package is not installed here.

The README's table is the matrix (``python -m tests.compat.matrix --markdown``); a test keeps them equal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from tests.compat import matrix

COMPAT = ROOT / "tests" / "compat"
#: All three launches together; on 2 idle cores they take well under a minute.
TIMEOUT = 480


def build_and_install(root: Path) -> Path:
    wheels, site = root / "wheels", root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    [wheel] = list(wheels.glob("lightning_rect-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return site


def launch_command(group: str, out: Path) -> list[str]:
    if group == "ddp":
        return [sys.executable, str(COMPAT / "ddp_cells.py"), str(out)]
    return [sys.executable, str(COMPAT / "run_cells.py"), "--group", group, "--out", str(out)]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The folder the wheel is installed into (``--target``): the ``PYTHONPATH`` of what runs from it."""
    return build_and_install(tmp_path_factory.mktemp("wheel"))


@pytest.mark.slow
def test_wheel_installed_elsewhere_runs_the_digits_default(site, tmp_path):
    user = tmp_path / "user"
    user.mkdir()

    def console_script(*args: str) -> subprocess.CompletedProcess:
        """The wheel's ``lightning-rect``, run in the user's folder with the install as its only copy."""
        env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
        run = [str(site / "bin" / "lightning-rect"), *args]
        return subprocess.run(run, cwd=user, env=env, capture_output=True, text=True, timeout=300)

    # The README's command for pip users.
    proc = console_script(
        "fit",
        "--config",
        "configs/digits.yaml",
        "--trainer.max_epochs=2",
        "--model.init_args.hidden_sizes=[32]",
        "--trainer.enable_progress_bar=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # ...with the configs shipped in the installed copy, not the checkout's (nor its editable install's)
    assert f"using the copy shipped with lightning_rect ({site / 'lightning_rect'}" in proc.stderr, proc.stderr[-2000:]
    [results] = list((user / "runs" / "digits").glob("version_*/results.json"))
    assert json.loads(results.read_text())["test/err"] < 0.5

    # ...and the configs can be written out for editing.
    proc = console_script("configs", "mine")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (user / "mine" / "configs" / "mnist.yaml").read_text() == (ROOT / "configs" / "mnist.yaml").read_text()
    assert (user / "mine" / "callbacks" / "wandb.yaml").is_file()


@pytest.fixture(scope="module")
def outcomes(site, tmp_path_factory) -> dict:
    """Every cell's outcome (``cells``), the folder of the install (``site``), what each launch imported
    (``imported``) and the end of each launch's output (``logs``)."""
    root = tmp_path_factory.mktemp("compat")
    wandb_dir = root / "wandb_home"  # W&B's settings and caches: nothing read from or written to home
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONFIG_DIR": str(wandb_dir),
        "WANDB_CACHE_DIR": str(wandb_dir),
        "WANDB_DATA_DIR": str(wandb_dir),
    }
    launches = {}
    try:
        for group in ("spawn", "ddp", "single"):  # the longest first
            folder = root / group
            (folder / "user").mkdir(parents=True)
            log = (folder / "log.txt").open("w")
            process = subprocess.Popen(
                launch_command(group, folder / "out.json"),
                cwd=folder / "user",
                env={**env, "COMPAT_WORKDIR": str(folder / "cells"), "COMPAT_SHARED": str(folder / "shared")},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            launches[group] = (process, log, folder)
        deadline = time.monotonic() + TIMEOUT
        for process, _, _ in launches.values():
            try:
                process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    finally:
        for process, log, _ in launches.values():
            if process.poll() is None:  # its group: the launch's own processes (DDP's second, spawned ones)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            log.close()
    found: dict = {"cells": {}, "imported": {}, "logs": {}, "site": site}
    for group, (process, _, folder) in launches.items():
        found["logs"][group] = f"exit code {process.returncode}; " + (folder / "log.txt").read_text()[-4000:]
        if (folder / "out.json").is_file():
            written = json.loads((folder / "out.json").read_text())
            found["cells"].update(written["cells"])
            found["imported"][group] = written["lightning_rect"]
    return found


@pytest.mark.slow
def test_every_launch_ran_the_installed_copy(outcomes):
    assert set(outcomes["imported"]) == {"single", "spawn", "ddp"}, outcomes["logs"]
    for group, path in outcomes["imported"].items():
        assert Path(path).is_relative_to(outcomes["site"]), (group, path)


@pytest.mark.slow
@pytest.mark.parametrize("cell_id", [cell.id for cell in matrix.CELLS])
def test_cell(outcomes, cell_id):
    cell = matrix.BY_ID[cell_id]
    reported = outcomes["cells"].get(cell_id)
    assert reported is not None, f"{cell_id} was not reported; its launch's output: {outcomes['logs'][cell.row.launch]}"
    detail = reported.get("detail")
    detail = json.dumps(detail, indent=1) if isinstance(detail, dict) else detail
    assert reported["outcome"] == cell.expected_here(), detail


def test_every_cell_has_its_check():
    from tests.compat import cells

    assert sorted(cell.check for cell in matrix.CELLS) == sorted(cells.CHECKS)


def readme_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("### Compatibility matrix")
    end = min(i for i in (readme.find("\n## ", start), readme.find("\n### ", start + 1)) if i != -1)
    return readme[start:end]


def test_the_readme_table_is_the_matrix():
    section, table = readme_section(), matrix.markdown()
    assert table in section, "README.md's compatibility matrix differs from: python -m tests.compat.matrix --markdown"
    assert table_rows(section) == table_rows(table)


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]
