"""Resume after a crash, divergence guard, bad checkpoints and bad configs."""

import csv
import json
import signal
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ROOT, run_in_process
from helpers.cli_process import start as cli

from lightning_rect import SparseMLP
from lightning_rect.callbacks import DivergenceGuard
from lightning_rect.data import DigitsDataModule
from lightning_rect.errors import CheckpointError, DivergenceError

CONFIGS = ROOT / "configs"
DETERMINISTIC_KEYS = (
    "best_val",
    "best_epoch",
    "epochs",
    "test/err",
    "test/loss",
    "test/sparsity/mean",
    "test/dead/mean",
)


def results(cwd: Path, name: str) -> dict:
    [path] = list((cwd / "runs" / name).glob("version_*/results.json"))
    return json.loads(path.read_text())


def last_weights(cwd: Path, name: str) -> dict:
    [path] = list((cwd / "runs" / name).glob("version_*/checkpoints/last.ckpt"))
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def kill_mid_run(cwd: Path, name: str, args: list[str], after_checkpoints: int) -> None:
    """Start a run, SIGKILL it once ``last.ckpt`` has been written ``after_checkpoints`` times."""
    proc = cli(cwd, *args)
    last = cwd / "runs" / name / "version_0" / "checkpoints" / "last.ckpt"
    seen, stamp, deadline = 0, None, time.time() + 180
    while seen < after_checkpoints and time.time() < deadline and proc.poll() is None:
        if last.exists() and last.stat().st_mtime_ns != stamp:
            stamp, seen = last.stat().st_mtime_ns, seen + 1
        time.sleep(0.02)
    time.sleep(0.2)  # into the next epoch
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()  # and its pipe closed
    assert not list((cwd / "runs" / name).glob("version_*/results.json"))
    killed_at = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    assert killed_at == after_checkpoints - 1  # the checkpoint is whole, and the kill came before the next one


@pytest.mark.slow
@pytest.mark.parametrize(
    "config,name,extra",
    [
        # the classifier's case, killed at a chosen step: test_resume.test_a_run_killed_in_epoch_1_or_2_...
        (
            "digits_pretrain.yaml",
            "digits_pretrain",
            [
                "--model.init_args.hidden_sizes=[256,128]",
                "--model.init_args.epochs_per_layer=1",
                "--trainer.max_epochs=2",
            ],
        ),
    ],
)
def test_killed_run_resumes_to_the_same_weights_and_results(tmp_path, no_summary_figures, config, name, extra):
    """A real process killed mid-run; the uninterrupted reference and the resume run in this process."""
    # batch size 1: an epoch lasts about a second even on a quiet machine, so the kill lands in it
    args = [
        "fit",
        "--config",
        str(CONFIGS / config),
        "--data.init_args.batch_size=1",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    whole.mkdir(), broken.mkdir()
    run_in_process(whole, *args)
    kill_mid_run(broken, name, args, after_checkpoints=1)  # for the DAE: killed while layer 2 trains
    out, err = run_in_process(broken, *args, "--ckpt_path", "last")
    assert "resuming from" in out + err
    ours, reference = results(broken, name), results(whole, name)
    for key in DETERMINISTIC_KEYS:
        if key in reference:
            assert ours[key] == reference[key], key
    a, b = last_weights(broken, name), last_weights(whole, name)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)
    # the history survived the resume: every epoch's validation row once, with the same values
    ours_rows, reference_rows = validation_rows(broken, name), validation_rows(whole, name)
    assert [r["epoch"] for r in ours_rows] == [str(e) for e in range(reference["epochs"])]
    assert ours_rows == reference_rows


def validation_rows(cwd: Path, name: str) -> list[dict]:
    [path] = list((cwd / "runs" / name).glob("version_*/metrics.csv"))
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    return [
        {k: v for k, v in row.items() if k == "epoch" or k.startswith("val/")}
        for row in rows
        if any(v and k.startswith("val/") for k, v in row.items())
    ]


def test_resume_without_a_previous_run_says_so(cli_in_process):
    code, stderr = cli_in_process("fit", "--config", str(CONFIGS / "digits.yaml"), "--ckpt_path", "last")
    assert code == 2
    assert "no last.ckpt under" in stderr and "Traceback" not in stderr


@pytest.mark.slow
def test_same_seed_gives_identical_results(finished_run, cli_in_process, no_summary_figures, tmp_path):
    """The session's finished run, fitted again from the same config and seed: the same numbers."""
    code, stderr = cli_in_process(*finished_run.args)
    assert code == 0, stderr[-2000:]
    [again] = sorted((tmp_path / "runs" / "digits").glob("version_*/results.json"))
    a, b = finished_run.results, json.loads(again.read_text())
    assert {k: a[k] for k in DETERMINISTIC_KEYS} == {k: b[k] for k in DETERMINISTIC_KEYS}


# ---- divergence ----------------------------------------------------------------------------------


class BlowsUp(SparseMLP):
    """Trains normally for one epoch, then its loss turns NaN at step 130."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step >= 130 else loss


def test_divergence_stops_with_step_loss_and_advice_and_keeps_the_last_checkpoint(tmp_path):
    model = BlowsUp(64, 10, [32], lr=0.05)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, monitor="val/err")
    trainer = L.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, callbacks=[ckpt, DivergenceGuard()])
    with pytest.raises(DivergenceError) as err:
        trainer.fit(model, datamodule=DigitsDataModule(batch_size=10))
    message = str(err.value)
    # checked every 20 steps: caught at the first check after step 130 (epoch 1 has steps 120-239)
    assert "nan at step 139 (epoch 1; last finite loss seen at step 119)" in message
    assert "lower the learning rate" in message
    assert "last.ckpt" in message
    kept = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert kept["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in kept["state_dict"].values() if torch.is_tensor(v))


@pytest.mark.slow
def test_cli_reports_divergence_in_one_line(cli_in_process):
    code, stderr = cli_in_process(
        "fit",
        "--config",
        str(CONFIGS / "digits.yaml"),
        "--model.init_args.lr=50",
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
    )
    assert code == 2
    assert "training diverged" in stderr and "--model.init_args.lr=0.1" in stderr
    assert "Traceback" not in stderr


# ---- bad checkpoints -----------------------------------------------------------------------------


def mlp_checkpoint(tmp_path) -> Path:
    model = SparseMLP(64, 10, [32])
    trainer = L.Trainer(logger=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    path = tmp_path / "mlp.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda d: d / "missing.ckpt", "does not exist"),
        (lambda d: (d / "notes.ckpt").write_text("hello") and d / "notes.ckpt", "not a PyTorch checkpoint"),
        (lambda d: torch.save({"weights": 1}, d / "plain.pt") or d / "plain.pt", "not a Lightning checkpoint"),
        (mlp_checkpoint, "written by SparseMLP, not by StackedDAE"),
    ],
)
def test_bad_pretrained_checkpoints_give_one_line_cause_and_fix(tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(CheckpointError, match=expected) as err:
        SparseMLP(64, 10, [32], pretrained=str(path)).load_pretrained()
    assert "\n" not in str(err.value)


def test_bad_checkpoint_on_the_command_line_is_one_line(cli_in_process, tmp_path):
    (tmp_path / "junk.ckpt").write_bytes(b"\x00" * 100)
    code, stderr = cli_in_process(
        "fit", "--config", str(CONFIGS / "digits.yaml"), f"--model.init_args.pretrained={tmp_path / 'junk.ckpt'}"
    )
    assert code == 2
    assert "not a PyTorch checkpoint" in stderr and "Traceback" not in stderr


# ---- bad configs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override,expected",
    [
        ("--model.init_args.l1=-0.5", "l1 must be a finite number >= 0"),
        ("--model.init_args.l1=.nan", "l1 must be a finite number >= 0"),
        ("--model.init_args.hidden_sizes=[]", "hidden_sizes must list at least one layer"),
        ("--data.init_args.labeled_fraction=0", "labeled_fraction must be in (0, 1]"),
        ("--data.init_args.labeled_fraction=1.5", "labeled_fraction must be in (0, 1]"),
        ('--model.init_args.activation_args={"a": 0}', "a (sharp_softplus sharpness) must be a finite number > 0"),
    ],
)
def test_bad_config_values_are_refused_at_start(cli_in_process, override, expected):
    args = ["fit", "--config", str(CONFIGS / "digits.yaml"), override]
    if "activation_args" in override:
        args.append("--model.init_args.activation=sharp_softplus")
    code, stderr = cli_in_process(*args)
    assert code == 2, stderr[-2000:]
    assert expected in stderr
    assert "Traceback" not in stderr and "Epoch 0" not in stderr


@pytest.mark.parametrize("level", ["1.0", "-0.1"])
def test_noise_level_outside_range_is_refused_at_start(cli_in_process, level):
    code, stderr = cli_in_process(
        "fit", "--config", str(CONFIGS / "digits_pretrain.yaml"), f"--model.init_args.noise_level={level}"
    )
    assert code == 2
    assert "noise_level must be in [0, 1)" in stderr


def test_every_config_sets_a_seed():
    import yaml

    for path in sorted(CONFIGS.glob("*.yaml")):
        assert isinstance(yaml.safe_load(path.read_text()).get("seed_everything"), int), path.name


def test_last_checkpoint_follows_the_last_epoch_even_without_a_new_best(tmp_path):
    from lightning_rect.app.cli import fit_callbacks, selection_checkpoint

    L.seed_everything(0)
    model = SparseMLP(64, 10, [16], lr=1e-12)  # validation error never changes: epoch 0 stays the best
    trainer = L.Trainer(
        max_epochs=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=fit_callbacks([], model, {"enable_progress_bar": False}),
    )
    best = selection_checkpoint(trainer, model)
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=50))
    assert Path(best.best_model_path).name == "best-epoch=0.ckpt"
    last = torch.load(Path(best.dirpath) / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2  # with save_last=True on the best checkpoint alone it would be 0 (Lightning 2.6)


# ---- checkpoints from elsewhere ------------------------------------------------------------------


class RunsCode:
    """Unpickling it makes a folder: what a checkpoint served by someone else could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.mkdir, (self.marker,)


def test_a_remote_checkpoint_is_read_as_weights_only(cli_in_process, tmp_path):
    import io

    from helpers.http_files import FileServer

    marker = tmp_path / "code_ran"
    evil = io.BytesIO()
    torch.save({"state_dict": {}, "payload": RunsCode(marker)}, evil)
    good = mlp_checkpoint(tmp_path).read_bytes()  # SparseMLP(64, 10, [32])
    with FileServer({"/evil.ckpt": evil.getvalue(), "/good.ckpt": good}) as server:
        code, stderr = cli_in_process(
            "fit", "--config", str(CONFIGS / "digits.yaml"), f"--ckpt_path={server.url}/evil.ckpt"
        )
        assert code == 2 and not marker.exists()
        [line] = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert f"{server.url}/evil.ckpt" in line and "a safe load refuses" in line and "weights_only" not in line
        code, stderr = cli_in_process(
            "test",
            "--config",
            str(CONFIGS / "digits.yaml"),
            f"--ckpt_path={server.url}/good.ckpt",
            "--model.init_args.hidden_sizes=[32]",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
        )
        assert code == 0, stderr[-2000:]
        code, stderr = cli_in_process(
            "test", "--config", str(CONFIGS / "digits.yaml"), f"--ckpt_path={server.url}/gone.ckpt"
        )
        assert code == 2 and f"--ckpt_path '{server.url}/gone.ckpt' does not exist" in stderr
    assert not marker.exists()


# ---- disks that refuse, signals ------------------------------------------------------------------


def test_a_full_disk_while_saving_firing_rates_is_one_line_naming_the_file(tmp_path, monkeypatch):
    from helpers.disk_faults import FullDisk

    from lightning_rect.callbacks.sparsity import save_firing_rates
    from lightning_rect.errors import StorageError

    path = tmp_path / "run" / "firing_rates.json"
    FullDisk().install(monkeypatch)
    with pytest.raises(StorageError) as err:
        save_firing_rates(path, "val", {}, {}, epoch=0, global_step=10)
    assert str(err.value).startswith(f"cannot write {path}: no space left on the device;") and "\n" not in str(
        err.value
    )
    assert list(path.parent.iterdir()) == []  # neither the file nor a temporary one


def test_ctrl_c_while_summary_png_is_drawn_is_one_line_and_keeps_results(cli_in_process, tmp_path, monkeypatch):
    import lightning_rect.app.plots.summary as summary

    def interrupted(run):
        raise KeyboardInterrupt

    monkeypatch.setattr(summary, "draw_summary", interrupted)
    code, stderr = cli_in_process(
        "fit",
        "--config",
        str(CONFIGS / "digits.yaml"),
        "--model.init_args.hidden_sizes=[8]",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=5",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    )
    run = tmp_path / "runs" / "digits" / "version_0"
    assert code == 130 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("interrupted while drawing summary.png;")
    assert json.loads((run / "results.json").read_text())["epochs"] == 1
    assert not [p.name for p in run.iterdir() if p.name.startswith(".") or "summary" in p.name]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, times, code", [("SIGTERM", 1, 143), ("SIGINT", 2, 130)], ids=["sigterm", "ctrl-c-twice"]
)
def test_a_stop_signal_ends_the_fit_with_one_line_and_the_run_resumes(tmp_path, cli_in_process, name, times, code):
    """A real process: SIGTERM, or Ctrl-C pressed twice (the second must neither kill it half-way nor add a
    traceback), ends it with 128 + the signal's number and one line naming the command that resumes it."""
    args = [
        "fit",
        "--config",
        str(CONFIGS / "digits.yaml"),
        "--model.init_args.hidden_sizes=[64]",
        "--data.init_args.batch_size=1",
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
    ]
    proc = cli(tmp_path, *args)
    last = tmp_path / "runs" / "digits" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 180
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be stopped"
    for _ in range(times):
        proc.send_signal(getattr(signal, name))
        time.sleep(0.02)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == code, out[-3000:]
    stopped = [line for line in out.splitlines() if line.startswith(f"stopped by {name}")]
    assert len(stopped) == 1 and "Traceback" not in out, out[-3000:]
    assert stopped[0].startswith(f"stopped by {name} at epoch 1 step ")
    checkpoint = Path("runs") / "digits" / "version_0" / "checkpoints" / "last.ckpt"
    assert f"the last checkpoint {checkpoint} is whole; resume with: python -m lightning_rect fit " in stopped[0]
    assert stopped[0].endswith(f"--ckpt_path {checkpoint}")
    assert not (last.parent.parent / "results.json").exists() and not (last.parent.parent / ".lock").exists()
    assert torch.load(last, weights_only=True)["epoch"] == 0
    if name == "SIGTERM":
        code, stderr = cli_in_process(*args, "--ckpt_path", str(tmp_path / checkpoint))
        assert code == 0, stderr[-2000:]
        assert json.loads((last.parent.parent / "results.json").read_text())["epochs"] == 2


def signal_at(name: str, step: int) -> str:
    return (
        f'--trainer.callbacks+={{"class_path": "helpers.signals.SignalAt", "init_args": {{"signal": "{name}", '
        f'"step": {step}}}}}'
    )


@pytest.mark.slow
@pytest.mark.parametrize("name, code", [("SIGINT", 130), ("SIGHUP", 129)])
def test_ctrl_c_or_a_hangup_mid_epoch_keeps_the_last_checkpoint_says_how_to_resume_and_releases_the_lock(
    cli_in_process, tmp_path, name, code
):
    """Issue 32 item 9: Ctrl-C exited 1 with Lightning's line alone, SIGHUP died silently with the lock held."""
    import shlex

    if signal.getsignal(getattr(signal, name)) not in (signal.SIG_DFL, signal.default_int_handler):
        pytest.skip(f"{name} is handled or ignored in this process (nohup?)")
    args = [
        "fit",
        "--config",
        str(CONFIGS / "digits.yaml"),
        "--model.init_args.hidden_sizes=[8]",
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    handler = signal.getsignal(getattr(signal, name))
    got, stderr = cli_in_process(*args, signal_at(name, 150))  # 120 steps an epoch: in epoch 1
    assert got == code, stderr[-3000:]
    assert signal.getsignal(getattr(signal, name)) == handler  # given back
    [line] = [line for line in stderr.splitlines() if line.startswith("stopped")]
    run = tmp_path / "runs" / "digits" / "version_0"
    assert line.startswith(f"stopped by {name} at epoch 1 step 15"), line
    assert (
        f"the last checkpoint {Path('runs/digits/version_0/checkpoints/last.ckpt')} is whole; resume with: "
        "lightning-rect fit --config "
        in line
        and "Traceback" not in stderr
    )
    assert not (run / ".lock").exists() and not (run / "results.json").exists()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    resume = shlex.split(line.partition("resume with: lightning-rect ")[2])
    assert resume[-2:] == ["--ckpt_path", str(Path("runs/digits/version_0/checkpoints/last.ckpt"))]
    got, stderr = cli_in_process(*resume)  # the command as printed
    assert got == 0, stderr[-2000:]
    assert json.loads((run / "results.json").read_text())["epochs"] == 2


def test_a_stop_before_the_first_checkpoint_leaves_no_run_folder(cli_in_process, tmp_path):
    args = [
        "fit",
        "--config",
        str(CONFIGS / "digits.yaml"),
        "--model.init_args.hidden_sizes=[8]",
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    got, stderr = cli_in_process(*args, signal_at("SIGINT", 30))
    assert got == 130, stderr[-3000:]
    [line] = [line for line in stderr.splitlines() if line.startswith("stopped")]
    assert line.startswith(
        "stopped by SIGINT at epoch 0 step 31, before its first checkpoint: nothing can be resumed; "
        "its run folder was removed; run the command again: lightning-rect fit --config "
    ), line
    assert not list((tmp_path / "runs" / "digits").glob("version_*"))


@pytest.mark.parametrize("rank, prints", [(0, True), (1, False)])
def test_a_stop_under_ddp_is_said_once_by_rank_zero_and_every_rank_exits_143(monkeypatch, capsys, rank, prints):
    from lightning.pytorch.utilities import rank_zero_only

    from lightning_rect.app import cli as cli_module
    from lightning_rect.app.user_errors import Stopped

    def stopped(args, **kwargs):
        raise Stopped("stopped by SIGTERM at epoch 1 step 10; resume with the same command and --ckpt_path last")

    monkeypatch.setattr(cli_module, "RectCLI", stopped)
    monkeypatch.setattr(rank_zero_only, "rank", rank)
    with pytest.raises(SystemExit) as stop:
        cli_module.main(["fit"])
    assert stop.value.code == 143
    assert ("stopped by SIGTERM at epoch 1" in capsys.readouterr().err) is prints


# ---- what the one lines name -----------------------------------------------------------------------


def test_the_last_good_checkpoint_named_is_one_of_this_runs_own_files(tmp_path):
    """A checkpoint path restored from another run's checkpoint (Lightning keeps ``best_model_path`` across
    folders) is never named as this run's 'last good checkpoint'."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_rect.checkpoint import last_checkpoint_path

    other, own = tmp_path / "other" / "checkpoints", tmp_path / "own" / "checkpoints"
    other.mkdir(parents=True), own.mkdir(parents=True)
    (other / "last.ckpt").write_bytes(b"x")
    callback = ModelCheckpoint(dirpath=own, filename="last")
    trainer = L.Trainer(logger=False, callbacks=[callback], enable_progress_bar=False, enable_model_summary=False)
    callback.best_model_path = str(other / "last.ckpt")  # as restored from the other run's checkpoint
    assert last_checkpoint_path(trainer) == ""
    (own / "last.ckpt").write_bytes(b"x")
    callback.best_model_path = str(own / "last.ckpt")
    assert last_checkpoint_path(trainer) == str(own / "last.ckpt")


def test_star_rating_predict_step_outside_a_trainer_reads_pretrained_first(tmp_path):
    from lightning_rect import StackedDAE, StarRatingMLP

    dae = StackedDAE(64, hidden_sizes=[8])
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(dae)
    trainer.save_checkpoint(tmp_path / "dae.ckpt")
    model = StarRatingMLP(64, 5, hidden_sizes=[8], pretrained=str(tmp_path / "dae.ckpt"))
    stars = model.predict_step((torch.rand(4, 64), torch.zeros(4, dtype=torch.long)), 0)
    assert stars.shape == (4,) and bool(model.pretrained_loaded)
    assert torch.equal(model.encoder.layers[0].linear.weight, dae.encoder.layers[0].linear.weight)


def test_too_little_memory_to_import_torch_is_one_line_naming_the_limit(monkeypatch, capsys):
    """Issue 32 item 9: under ``ulimit -v 2000000`` importing torch fails ('failed to map segment'): one line."""
    import builtins
    import resource
    import sys

    import lightning_rect.__main__ as entry

    real_import = builtins.__import__

    def no_memory(name, *args, **kwargs):
        if name == "lightning_rect.app.cli":
            raise ImportError("libtorch_cpu.so: failed to map segment from shared object")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_memory)
    monkeypatch.setattr(resource, "getrlimit", lambda which: (2_048_000_000, resource.RLIM_INFINITY))
    monkeypatch.setattr(sys, "argv", ["lightning-rect", "fit", "--config", "digits"])
    with pytest.raises(SystemExit) as stop:
        entry.main()
    [line] = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2
    assert line.startswith("error: lightning-rect fit ran out of memory (ImportError: libtorch_cpu.so: failed to map")
    assert "at most 1.9 GB of address space (ulimit -v 2000000)" in line and "ulimit -v unlimited" in line
