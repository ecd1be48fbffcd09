"""The package as a pip user gets it: built into a wheel, installed outside the checkout, run from
a folder that has no configs/ of its own, with the README's pip-user command."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_wheel_installed_elsewhere_runs_the_digits_default(tmp_path):
    wheels, site, user = tmp_path / "wheels", tmp_path / "site", tmp_path / "user"
    user.mkdir()
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
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}

    # The README's command for pip users (the console script of the wheel).
    proc = subprocess.run(
        [
            str(site / "bin" / "lightning-rect"),
            "fit",
            "--config",
            "configs/digits.yaml",
            "--trainer.max_epochs=2",
            "--model.init_args.hidden_sizes=[32]",
            "--trainer.enable_progress_bar=false",
        ],
        cwd=user,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # ...with the configs shipped in the installed copy, not the checkout's (nor its editable install's)
    assert f"using the copy shipped with lightning_rect ({site / 'lightning_rect'}" in proc.stderr, proc.stderr[-2000:]
    [results] = list((user / "runs" / "digits").glob("version_*/results.json"))
    assert json.loads(results.read_text())["test/err"] < 0.5

    # ...and the configs can be written out for editing.
    proc = subprocess.run(
        [str(site / "bin" / "lightning-rect"), "configs", "mine"],
        cwd=user,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (user / "mine" / "configs" / "mnist.yaml").read_text() == (ROOT / "configs" / "mnist.yaml").read_text()
    assert (user / "mine" / "callbacks" / "wandb.yaml").is_file()
