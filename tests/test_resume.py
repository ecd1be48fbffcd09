"""Runs survive crashes with their history; checkpoints are never half-written (README, "Reliability").

Fast tests train tiny nets in-process; the ``slow`` ones kill real CLI processes with SIGKILL.
"""

import csv
import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from conftest import ROOT, run_in_process
from helpers.cli_process import finish, start
from helpers.disk_faults import FullDisk

from lightning_rect import SparseMLP, StackedDAE
from lightning_rect.app.checkpoint_io import AtomicCheckpointIO
from lightning_rect.app.loggers import CSVLogger
from lightning_rect.checkpoint import load_checkpoint_file
from lightning_rect.errors import CheckpointError, StorageError

DIGITS = str(ROOT / "configs" / "digits.yaml")
#: 12 steps per epoch, a second or two per fit in-process
TINY = [
    "--model.init_args.hidden_sizes=[16]",
    "--data.init_args.batch_size=100",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def checksums(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def metric_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def epochs_with(rows: list[dict[str, str]], key: str) -> list[int]:
    """The epoch of every row that has ``key``, in file order."""
    return [int(float(row["epoch"])) for row in rows if row.get(key) not in (None, "")]


def loads_whole(path: Path) -> bool:
    try:
        load_checkpoint_file(path)
        return True
    except CheckpointError:
        return False


def fit_time(checkpoint: dict) -> float:
    """Seconds of training up to ``checkpoint``: Lightning's ``Timer`` state saved in it."""
    return checkpoint["callbacks"]["Timer"]["time_elapsed"]["train"]


# ---- atomic checkpoints ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code,cause", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only"), (errno.EACCES, "permission denied")]
)
def test_a_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temporary_file(tmp_path, monkeypatch, code, cause):
    elsewhere = tmp_path / "tmpdir"  # $TMPDIR: never used, the temporary file lives next to the target
    elsewhere.mkdir()
    monkeypatch.setenv("TMPDIR", str(elsewhere))
    monkeypatch.setattr("tempfile.tempdir", None)
    folder = tmp_path / "run" / "checkpoints"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 0}, folder / "last.ckpt")
    FullDisk(code, free_bytes=1000).install(monkeypatch)  # the write gets half-way, then fails
    with pytest.raises(StorageError) as err:
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 1}, folder / "last.ckpt")
    message = str(err.value)
    assert "\n" not in message and str(folder) in message and cause in message and "last.ckpt" in message
    assert io.load_checkpoint(folder / "last.ckpt")["epoch"] == 0  # the previous one, whole
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]
    assert list(elsewhere.iterdir()) == []


def test_a_write_killed_half_way_leaves_a_hidden_temporary_file_that_the_next_write_removes(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / ".last.ckpt.abc123.tmp").write_bytes(b"PK\x03\x04 half a checkpoint")  # what a SIGKILL leaves
    AtomicCheckpointIO().save_checkpoint({"epoch": 3}, folder / "last.ckpt")
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]
    assert oct((folder / "last.ckpt").stat().st_mode & 0o777) != oct(0o600)  # an ordinary file, not mkstemp's


def file_with(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


class NotAWeight:
    pass


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda d: d / "missing.ckpt", "does not exist"),
        (lambda d: d, "is a folder"),
        (lambda d: file_with(d / "empty.ckpt", b""), "is empty"),
        (lambda d: file_with(d / "junk.ckpt", b"\x00" * 100), "not a PyTorch checkpoint"),
        (lambda d: torch.save({"x": NotAWeight()}, d / "object.ckpt") or d / "object.ckpt", "a safe load refuses"),
    ],
)
def test_unreadable_checkpoints_are_one_line_without_unsafe_advice(tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(CheckpointError, match=expected) as err:
        AtomicCheckpointIO().load_checkpoint(path)
    assert "\n" not in str(err.value) and "weights_only" not in str(err.value)


# ---- the run's history -------------------------------------------------------------------------


def test_the_history_is_kept_up_to_the_resumed_step_and_a_cut_off_row_is_dropped(tmp_path):
    first = CSVLogger(tmp_path, name="run")
    assert not (tmp_path / "run").exists()  # nothing on disk before there is something to write
    for epoch in range(4):
        first.log_metrics({"val/err": 0.5 - epoch / 10, "epoch": epoch}, step=10 * epoch + 9)
    with open(Path(first.log_dir) / "metrics.csv", "a") as file:
        file.write("0.1,4")  # a row the killed process was writing
    resumed = CSVLogger(tmp_path, name="run", version=0)
    resumed.continue_history(19)  # the checkpoint was saved at step 19 (epoch 1)
    resumed.log_metrics({"val/err": 0.25, "epoch": 2, "train/loss": 1.0}, step=29)
    rows = metric_rows(Path(resumed.log_dir))
    assert [(r["epoch"], r["step"], r["val/err"], r["train/loss"]) for r in rows] == [
        ("0", "9", "0.5", ""),
        ("1", "19", "0.4", ""),
        ("2", "29", "0.25", "1.0"),
    ]


def test_a_new_writer_in_another_process_of_the_run_keeps_the_runs_rows(tmp_path):
    import pickle

    fitted = CSVLogger(tmp_path, name="run")
    assert fitted.version == 0 and fitted.claimed
    tester = pickle.loads(pickle.dumps(fitted))  # ddp_spawn hands each stage's processes a copy, writer not started
    fitted.log_metrics({"val/err": 0.5, "epoch": 0}, step=9)
    tester.log_metrics({"test/err": 0.25, "epoch": 0}, step=9)
    assert [(r["val/err"], r["test/err"]) for r in metric_rows(Path(fitted.log_dir))] == [("0.5", ""), ("", "0.25")]

    again = CSVLogger(tmp_path, name="run", version=0)  # a new fit into a fixed folder: starts afresh, as Lightning's
    again.log_metrics({"val/err": 0.125, "epoch": 0}, step=9)
    assert [r["val/err"] for r in metric_rows(Path(again.log_dir))] == ["0.125"]
    kept = CSVLogger(tmp_path, name="run", version=0)
    kept.own_rows = True  # the CLI's mark after a fit: the rows there are this run's
    kept.log_metrics({"test/err": 0.375, "epoch": 0}, step=9)
    assert [(r["val/err"], r["test/err"]) for r in metric_rows(Path(kept.log_dir))] == [("0.125", ""), ("", "0.375")]


@pytest.fixture
def fit(tmp_path, monkeypatch, capsys):
    """``fit --config digits.yaml`` of a tiny net through ``main`` in this process: (exit code, stdout, stderr)."""
    from lightning_rect.app.cli import main

    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> tuple[int, str, str]:
        try:
            main(["fit", "--config", DIGITS, *TINY, *args])
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


class Crash(Exception):
    pass


@pytest.mark.slow
def test_resume_keeps_the_history_applies_a_new_lr_and_then_refuses_the_finished_run(fit, tmp_path, monkeypatch):
    train = SparseMLP.training_step

    def crashing_step(self, batch, batch_idx):
        if self.global_step == 5:  # epoch 0 (steps 0-11) takes 0.5 s more: the fit time before the crash
            time.sleep(0.5)
        if self.global_step == 15:  # epoch 1 (steps 12-23)
            raise Crash
        return train(self, batch, batch_idx)

    monkeypatch.setattr(SparseMLP, "training_step", crashing_step)
    with pytest.raises(Crash):
        fit("--trainer.max_epochs=3")
    monkeypatch.setattr(SparseMLP, "training_step", train)
    run = tmp_path / "runs" / "digits" / "version_0"
    crashed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert crashed["epoch"] == 0 and fit_time(crashed) >= 0.5  # epoch 0 slept 0.5 s

    started = time.monotonic()
    code, out, stderr = fit("--trainer.max_epochs=3", "--ckpt_path", "last", "--model.init_args.lr=0.001")
    resumed_for = time.monotonic() - started
    assert code == 0, stderr[-2000:]
    assert "resumed at step 12: learning rate changed from 0.03 to 0.001" in out

    rows = metric_rows(run)
    assert epochs_with(rows, "val/err") == [0, 1, 2]  # every epoch exactly once
    assert epochs_with(rows, "train/loss") == [0, 1, 2]
    [change] = [r for r in rows if r.get("resume/lr")]
    assert float(change["resume/lr"]) == 0.001 and int(change["step"]) == 12
    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["hyper_parameters"]["lr"] == 0.001
    assert {g["lr"] for s in final["optimizer_states"] for g in s["param_groups"]} == {0.001}  # trained with it
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["init_args"]["lr"] == 0.03  # the first, kept
    resumed_config = yaml.safe_load((run / "config.resume-1.yaml").read_text())
    assert resumed_config["model"]["init_args"]["lr"] == 0.001
    # a validate/test with this saved config must not find this run's folder in it (issue 32 item 3)
    assert resumed_config["trainer"]["logger"]["init_args"]["version"] is None
    assert resumed_config["ckpt_path"] == str(Path("runs") / "digits" / "version_0" / "checkpoints" / "last.ckpt")
    results = json.loads((run / "results.json").read_text())
    # the whole fit time: before the crash (up to its checkpoint) plus after the resume
    assert results["epochs"] == 3 and fit_time(crashed) < results["fit_seconds"] < fit_time(crashed) + resumed_for

    before = checksums(tmp_path / "runs")
    code, _, stderr = fit("--trainer.max_epochs=3", "--ckpt_path", "last")
    assert code == 2 and len(error_lines(stderr)) == 1 and "has finished" in stderr
    assert "Traceback" not in stderr
    assert checksums(tmp_path / "runs") == before  # no config.yaml, no metrics.csv wipe, nothing


def crashed_run(fit, tmp_path, monkeypatch) -> Path:
    """runs/digits/version_0 of a fit that crashed in epoch 1: its last.ckpt is epoch 0's, no results.json."""
    train = SparseMLP.training_step

    def crashing_step(self, batch, batch_idx):
        if self.global_step == 15:  # epoch 1 (steps 12-23)
            raise Crash
        return train(self, batch, batch_idx)

    monkeypatch.setattr(SparseMLP, "training_step", crashing_step)
    with pytest.raises(Crash):
        fit("--trainer.max_epochs=2")
    monkeypatch.setattr(SparseMLP, "training_step", train)
    return tmp_path / "runs" / "digits" / "version_0"


@pytest.mark.slow
def test_a_moved_run_resumed_from_its_last_ckpt_goes_on_in_its_own_folder(fit, tmp_path, monkeypatch):
    run = tmp_path / "moved" / "experiments" / "first"
    run.parent.mkdir(parents=True)
    crashed_run(fit, tmp_path, monkeypatch).rename(run)  # the whole run folder moved elsewhere, renamed too

    code, out, stderr = fit("--trainer.max_epochs=2", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}")
    assert code == 0, stderr[-2000:]
    assert f"resuming from {run / 'checkpoints' / 'last.ckpt'} in its run folder {run}" in out
    assert list((tmp_path / "runs" / "digits").iterdir()) == []  # no new version_N in the working folder
    assert epochs_with(metric_rows(run), "val/err") == [0, 1]  # one history, epoch 0 from before the crash
    assert epochs_with(metric_rows(run), "train/loss") == [0, 1]
    assert (run / "config.yaml").is_file() and (run / "config.resume-1.yaml").is_file()
    results = json.loads((run / "results.json").read_text())
    assert results["epochs"] == 2
    assert results["checkpoint"] == str(run / "checkpoints" / f"best-epoch={results['best_epoch']}.ckpt")
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1


@pytest.mark.slow
def test_a_finished_run_or_an_older_checkpoint_resumes_in_a_new_folder_and_says_why(fit, tmp_path, monkeypatch):
    run = crashed_run(fit, tmp_path, monkeypatch)
    best = run / "checkpoints" / "best-epoch=0.ckpt"
    os.utime(best, (time.time() - 60, time.time() - 60))  # written before last.ckpt
    code, _, stderr = fit("--trainer.max_epochs=2", f"--ckpt_path={best}")
    assert code == 0, stderr[-2000:]
    [note] = [line for line in stderr.splitlines() if line.startswith("note: ")]
    last = run / "checkpoints" / "last.ckpt"
    assert note == (
        f"note: best-epoch=0.ckpt is not the newest checkpoint of {run} (last.ckpt is), so the resume "
        f"starts a new run folder and leaves that one as it is; --ckpt_path {last} continues that run in "
        "place"
    )
    assert not (run / "results.json").exists() and (run.parent / "version_1" / "results.json").is_file()

    finished = run.parent / "version_1"
    before = checksums(finished)
    code, _, stderr = fit("--trainer.max_epochs=3", f"--ckpt_path={finished / 'checkpoints' / 'last.ckpt'}")
    assert code == 0, stderr[-2000:]
    [note] = [line for line in stderr.splitlines() if line.startswith("note: ")]
    assert note == (
        f"note: {finished} is a finished run (it has results.json), so the resume starts a new run folder "
        "and leaves that one as it is"
    )
    assert checksums(finished) == before and (run.parent / "version_2" / "results.json").is_file()


def test_a_full_disk_ends_in_one_line_with_the_previous_checkpoint_whole(fit, tmp_path, monkeypatch):
    # epoch 0 writes best-epoch=0.ckpt and last.ckpt; the first write of epoch 1 finds the disk full
    FullDisk(errno.ENOSPC, writes_left=2, free_bytes=1000, only=".ckpt").install(monkeypatch)
    code, _, stderr = fit("--trainer.max_epochs=3")
    assert code == 2, stderr[-2000:]
    [line] = error_lines(stderr)
    folder = tmp_path / "runs" / "digits" / "version_0" / "checkpoints"
    assert "no space left on the device" in line and str(Path("runs") / "digits" / "version_0" / "checkpoints") in line
    assert "Traceback" not in stderr
    assert sorted(p.name for p in folder.iterdir()) == ["best-epoch=0.ckpt", "last.ckpt"]  # no temporary file
    assert all(loads_whole(p) for p in folder.iterdir())
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 0


@pytest.mark.slow
def test_a_disk_that_fills_while_epoch_0s_last_ckpt_is_written_resumes_from_its_whole_best_checkpoint(
    fit, tmp_path, monkeypatch
):
    """Epoch 0 writes best-epoch=0.ckpt whole, then the disk is full for last.ckpt: ``--ckpt_path last``
    resumes from the best checkpoint (the same epoch), not 'stopped before its first checkpoint'."""
    with monkeypatch.context() as patch:
        FullDisk(errno.ENOSPC, writes_left=1, free_bytes=1000, only=".ckpt").install(patch)
        code, _, stderr = fit("--trainer.max_epochs=2")
    assert code == 2 and "no space left on the device" in stderr, stderr[-2000:]
    folder = tmp_path / "runs" / "digits" / "version_0" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best-epoch=0.ckpt"]

    code, out, stderr = fit("--trainer.max_epochs=2", "--ckpt_path", "last")
    assert code == 0, stderr[-2000:]
    assert (
        f"resuming from {Path('runs') / 'digits' / 'version_0' / 'checkpoints' / 'best-epoch=0.ckpt'} (its "
        "last.ckpt was never written whole)" in out
    )
    results = json.loads((folder.parent / "results.json").read_text())
    assert results["epochs"] == 2 and epochs_with(metric_rows(folder.parent), "val/err") == [0, 1]


# ---- refused before anything is written ----------------------------------------------------------


def saved(model: L.LightningModule, path: Path) -> Path:
    trainer = L.Trainer(logger=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return path


@pytest.mark.slow
def test_a_plain_run_goes_on_with_fused_sgd_to_the_same_weights_within_rounding(fit, tmp_path, monkeypatch):
    """fused_sgd computes the same step another way, so a resume may switch it on (``reproduce`` does,
    for runs a plain invocation left half done)."""
    train = SparseMLP.training_step

    def crashing_step(self, batch, batch_idx):
        if self.global_step == 15:
            raise Crash
        return train(self, batch, batch_idx)

    monkeypatch.setattr(SparseMLP, "training_step", crashing_step)
    with pytest.raises(Crash):
        fit("--trainer.max_epochs=3", "--model.init_args.l1=0")
    monkeypatch.setattr(SparseMLP, "training_step", train)
    code, out, stderr = fit(
        "--trainer.max_epochs=3", "--model.init_args.l1=0", "--ckpt_path", "last", "--model.init_args.fused_sgd=true"
    )
    assert code == 0, stderr[-2000:]
    code, _, stderr = fit("--trainer.max_epochs=3", "--model.init_args.l1=0")  # uninterrupted, plain: version_1
    assert code == 0, stderr[-2000:]
    runs = tmp_path / "runs" / "digits"
    resumed, plain = (
        torch.load(runs / v / "checkpoints" / "last.ckpt", weights_only=True) for v in ("version_0", "version_1")
    )
    assert resumed["hyper_parameters"]["fused_sgd"] is True and plain["hyper_parameters"]["fused_sgd"] is False
    assert resumed["global_step"] == plain["global_step"] == 36
    worst = max(
        (resumed["state_dict"][k] - v).abs().max().item()
        for k, v in plain["state_dict"].items()
        if v.is_floating_point()
    )
    assert worst < 1e-5
    assert epochs_with(metric_rows(runs / "version_0"), "val/err") == [0, 1, 2]


@pytest.mark.parametrize(
    "make,expected",
    [
        (
            lambda d: saved(StackedDAE(64, hidden_sizes=[16]), d / "dae.ckpt"),
            ["holds a StackedDAE checkpoint but the config trains a SparseMLP", "--model.init_args.pretrained="],
        ),
        (
            lambda d: saved(SparseMLP(64, 10, [32], l1=0.5), d / "mlp.ckpt"),
            ["hidden_sizes=[32] -> [16]", "l1=0.5 -> 0.001", "may change only lr"],
        ),
    ],
)
def test_a_checkpoint_that_does_not_fit_the_config_is_refused_in_one_line(fit, tmp_path, make, expected):
    path = make(tmp_path)
    code, _, stderr = fit(f"--ckpt_path={path}")
    assert code == 2
    [line] = error_lines(stderr)
    assert all(part in line for part in expected), line
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_resume_with_another_scheduler_than_the_run_had_is_refused_in_one_line(fit, tmp_path):
    code, _, stderr = fit("--trainer.max_epochs=1")
    run = tmp_path / "runs" / "digits" / "version_0"
    assert code == 0, stderr[-2000:]
    (run / "results.json").unlink()  # as if the run had been killed after its checkpoint
    step_lr = ["--lr_scheduler=torch.optim.lr_scheduler.StepLR", "--lr_scheduler.step_size=1"]
    code, _, stderr = fit("--trainer.max_epochs=2", "--ckpt_path", "last", *step_lr)
    [line] = error_lines(stderr)
    assert code == 2 and "lr_scheduler None -> StepLR(" in line and "may change only lr" in line, line
    assert not (run / "results.json").exists() and not list(run.glob("config.resume-*.yaml"))


def test_max_epochs_0_records_nothing(fit, tmp_path):
    code, _, stderr = fit("--trainer.max_epochs=0")
    assert code == 2 and "max_epochs=0 trains nothing" in stderr and len(error_lines(stderr)) == 1
    assert not (tmp_path / "runs").exists()


def test_a_run_that_fails_before_training_leaves_no_folder(fit, tmp_path):
    mlp = saved(SparseMLP(64, 10, [16]), tmp_path / "not_a_dae.ckpt")  # read when fit starts, after setup
    code, _, stderr = fit(f"--model.init_args.pretrained={mlp}")
    assert code == 2 and "not by StackedDAE" in stderr
    assert not (tmp_path / "runs" / "digits").exists()


@pytest.mark.slow
def test_a_config_naming_lightnings_csv_logger_keeps_it_and_a_resume_says_the_history_is_lost(fit, tmp_path):
    lightnings = "--trainer.logger.class_path=lightning.pytorch.loggers.CSVLogger"
    code, _, stderr = fit("--trainer.max_epochs=1", lightnings)
    run = tmp_path / "runs" / "digits" / "version_0"
    assert code == 0 and epochs_with(metric_rows(run), "val/err") == [0], stderr[-2000:]
    (run / "results.json").unlink()
    code, _, stderr = fit("--trainer.max_epochs=2", lightnings, "--ckpt_path", "last")
    assert code == 0, stderr[-2000:]
    [note] = [line for line in stderr.splitlines() if line.startswith("note: ")]
    assert note.startswith("note: lightning.pytorch.loggers.CSVLogger deletes the run's metrics.csv on a resume")
    assert epochs_with(metric_rows(run), "val/err") == [1]  # Lightning's logger, not swapped for ours


# ---- one process per run folder -----------------------------------------------------------------


def test_loggers_that_list_the_folders_at_once_still_claim_a_version_each(tmp_path, monkeypatch):
    from lightning.fabric.loggers.csv_logs import CSVLogger as FabricCSVLogger

    # both listed runs/run before either made its folder: Lightning's logger would give both version_0
    monkeypatch.setattr(FabricCSVLogger, "_get_next_version", lambda self: 0)
    first, second = CSVLogger(tmp_path, name="run"), CSVLogger(tmp_path, name="run")
    assert (first.version, second.version) == (0, 1) and first.claimed and second.claimed
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["version_0", "version_1"]


def test_a_run_folder_in_use_is_refused_in_one_line_naming_the_holder(fit, tmp_path):
    from lightning_rect.app.run_lock import run_lock

    code, _, stderr = fit("--trainer.max_epochs=1")
    run = tmp_path / "runs" / "digits" / "version_0"
    assert code == 0 and not (run / ".lock").exists(), stderr[-2000:]  # released when the fit ended
    (run / "results.json").unlink()  # unfinished: --ckpt_path last resumes it
    with run_lock(run):  # another process resuming it, as far as the next one can tell
        before = checksums(tmp_path / "runs")
        code, _, stderr = fit("--trainer.max_epochs=2", "--ckpt_path", "last")
        assert code == 2
        [line] = error_lines(stderr)
        assert f"the run folder {Path('runs') / 'digits' / 'version_0'} is in use by pid {os.getpid()} on " in line
        assert "nothing was changed" in line and "Traceback" not in stderr
        assert checksums(tmp_path / "runs") == before


@pytest.mark.slow
def test_two_fits_of_one_config_started_together_get_a_run_folder_each(tmp_path):
    procs = [start(tmp_path, "fit", "--config", DIGITS, *TINY, "--trainer.max_epochs=2") for _ in range(2)]
    for proc in procs:
        finish(proc)
    runs = sorted((tmp_path / "runs" / "digits").iterdir())
    assert [run.name for run in runs] == ["version_0", "version_1"]
    for run in runs:
        results = json.loads((run / "results.json").read_text())
        assert Path(results["checkpoint"]).parent == tmp_path / "runs" / "digits" / run.name / "checkpoints"
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
            f"best-epoch={results['best_epoch']}.ckpt",
            "last.ckpt",
        ]  # nobody else's, no -v1 copies
        assert epochs_with(metric_rows(run), "val/err") == [0, 1]


# ---- kill -9 -------------------------------------------------------------------------------------

#: 120 steps per epoch; three epochs
KILL_ARGS = [
    "fit",
    "--config",
    DIGITS,
    "--model.init_args.hidden_sizes=[64,64]",
    "--data.init_args.batch_size=10",
    "--trainer.max_epochs=3",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
STEPS_PER_EPOCH = 120
#: A callback the killed runs load from tmp_path: SIGKILL to itself when a given training step starts.
KILLER = """
import os, signal
from lightning import Callback

class KillAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The reference run, in this process: only the killed runs need one of their own."""
    cwd = tmp_path_factory.mktemp("whole")
    run_in_process(cwd, *KILL_ARGS)
    return cwd / "runs" / "digits" / "version_0"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1])  # one kill at a random step: test_reliability kills MLP and DAE too
def test_a_run_killed_in_epoch_1_or_2_resumes_to_the_same_weights_and_history(uninterrupted, tmp_path, seed):
    step = random.Random(seed).randrange(STEPS_PER_EPOCH + 1, 3 * STEPS_PER_EPOCH)  # inside epoch 1 or 2
    (tmp_path / "killer.py").write_text(KILLER)
    killer = json.dumps({"class_path": "killer.KillAt", "init_args": {"step": step}})
    proc = start(tmp_path, *KILL_ARGS, f"--trainer.callbacks+={killer}", env={"PYTHONPATH": str(tmp_path)})
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, out[-3000:]
    run = tmp_path / "runs" / "digits" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    killed = torch.load(last, weights_only=True)
    assert killed["epoch"] == step // STEPS_PER_EPOCH - 1 and not (run / "results.json").exists()

    out, err = run_in_process(tmp_path, *KILL_ARGS, "--ckpt_path", "last")
    assert f"resuming from {Path('runs') / 'digits' / 'version_0' / 'checkpoints' / 'last.ckpt'}" in out + err
    ours = torch.load(last, weights_only=True)["state_dict"]
    reference = torch.load(uninterrupted / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert ours.keys() == reference.keys()
    assert all(
        torch.equal(ours[k], reference[k]) if torch.is_tensor(ours[k]) else ours[k] == reference[k] for k in ours
    )
    rows, reference_rows = metric_rows(run), metric_rows(uninterrupted)
    assert epochs_with(rows, "val/err") == epochs_with(rows, "train/loss") == [0, 1, 2]
    for key in ("val/err", "val/loss", "train/loss"):
        assert [r[key] for r in rows if r[key]] == [r[key] for r in reference_rows if r[key]], key
    assert json.loads((run / "results.json").read_text())["fit_seconds"] > fit_time(killed)
    assert (run / "config.yaml").exists() and (run / "config.resume-1.yaml").exists()


#: The second write of last.ckpt (epoch 1's) pauses 2 s half-way (a test-only plugin: helpers/disk_faults.py).
SLOW_WRITES = [
    "--trainer.plugins=" + json.dumps({"class_path": "helpers.disk_faults.SlowCheckpointIO", "init_args": {"pause": 2}})
]


@pytest.mark.slow
def test_a_kill_during_a_checkpoint_write_keeps_the_previous_last_ckpt(tmp_path):
    if not Path("/dev/shm").is_dir():
        pytest.skip("needs /dev/shm (a tmpfs) as a second file system for $TMPDIR")
    tmpdir = Path(f"/dev/shm/lightning_rect_test_{os.getpid()}_{time.time_ns()}")
    tmpdir.mkdir()
    try:
        folder = tmp_path / "runs" / "digits" / "version_0" / "checkpoints"
        proc = start(tmp_path, *KILL_ARGS, *SLOW_WRITES, env={"TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT / "tests")})
        wait_for((folder / "last.ckpt").exists, proc)  # epoch 0's last.ckpt is whole
        whole = (folder / "last.ckpt").stat().st_size
        # epoch 1's is half written: the writer is asleep between its two halves
        wait_for(lambda: any(p.stat().st_size for p in folder.glob(".last.ckpt.*.tmp")), proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        [half] = folder.glob(".last.ckpt.*.tmp")
        assert 0 < half.stat().st_size < whole  # the kill did land inside the write
        assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 0  # the previous one, whole
        assert list(tmpdir.iterdir()) == []  # nothing went through the other file system

        with pytest.MonkeyPatch.context() as patch:  # the resume, in this process, with the same $TMPDIR
            patch.setenv("TMPDIR", str(tmpdir))
            patch.setattr(tempfile, "tempdir", None)  # read $TMPDIR again
            run_in_process(tmp_path, *KILL_ARGS, "--ckpt_path", "last")
        assert not list(folder.glob(".*.tmp"))  # the next write of last.ckpt removed the killed one's
        assert all(loads_whole(p) for p in folder.glob("*.ckpt"))
        assert epochs_with(metric_rows(folder.parent), "val/err") == [0, 1, 2]
        assert json.loads((folder.parent / "results.json").read_text())["epochs"] == 3
    finally:
        for leftover in tmpdir.iterdir():
            leftover.unlink()
        tmpdir.rmdir()


def wait_for(condition, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, "the run ended before it could be killed: " + proc.stdout.read()[-2000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)
