"""``reproduce`` shares nothing it is writing: one process per output folder, and on SIGTERM or
Ctrl-C its running children are told to stop and read to their end, so they save and none is orphaned."""

import json
import os
import signal
import subprocess
import sys

import pytest

from lightning_rect.app.run_lock import run_lock
from lightning_rect.checkpoint import load_checkpoint_file
from lightning_rect.reproduce import main


def test_a_second_reproduce_into_the_same_folder_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    with run_lock(out, "reproduction output folder"):
        with pytest.raises(SystemExit) as stopped:
            main(["l1_sweep", "--datasets", "digits", "--budget", "tiny", "--in-process", "--out", str(out)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith("error: the reproduction output folder") and f"pid {os.getpid()}" in err[0]
    )
    assert sorted(p.name for p in out.iterdir()) == []  # nothing written (the lock file went with the lock)


@pytest.mark.slow
def test_sigterm_stops_the_children_lets_them_save_and_exits_143(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"}
    # digits at the small budget: 10 fine-tuning epochs per run, a few seconds each; two runs at once
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lightning_rect",
            "reproduce",
            "l1_sweep",
            "--datasets",
            "digits",
            "--budget",
            "small",
            "--parallel",
            "2",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    for line in proc.stdout:  # wait for a run's second epoch: it has a checkpoint to keep
        seen.append(line)
        if "epoch 2/" in line:
            break
    else:
        pytest.fail("no progress line: " + "".join(seen))
    tag = seen[-1].split("]")[0] + "]"  # "[i/n]": the run that printed it, named on its first line
    started = next(text for text in seen if text.startswith(tag) and text.rstrip().endswith(")"))
    advanced = started.rstrip().rpartition("(")[2].rstrip(")")
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=180)  # reads to the end and closes the pipe
    assert proc.returncode == 143, rest
    assert "stopped by SIGTERM" in rest and "rerun the same command" in rest
    assert "again from scratch" not in rest and "] mnist" not in rest  # no retry, no new run once told to stop
    children = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout.split()
    assert children == []  # every child ended before its parent
    runs = [p for p in (out / "runs").iterdir() if (p / "version_0").is_dir()]
    assert 1 <= len(runs) <= 2
    checkpoint = load_checkpoint_file(out / "runs" / advanced / "version_0" / "checkpoints" / "last.ckpt")  # whole
    assert checkpoint["epoch"] >= 1 and isinstance(checkpoint["state_dict"], dict)
    for run in runs:
        log = (run / "output.log").read_text()
        assert "Traceback" not in log and "BrokenPipe" not in log
        assert log.count("$ ") == 1  # one attempt: a stopped run is not started again
    status = {r["id"]: r["status"] for r in json.loads((out / "runs.json").read_text())["runs"]}
    assert "interrupted" in status.values() and "failed" not in status.values()
