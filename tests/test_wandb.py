"""callbacks/wandb.yaml: an offline W&B run holds the metrics, the full config once and the results;
the same command works with W&B disabled, in the same log folder."""

import json
from pathlib import Path

import pytest
from conftest import ROOT, run_in_process
from helpers.wandb_log import read_offline_run
from lightning import Trainer
from lightning.pytorch.loggers import CSVLogger

import lightning_rect.app.wandb as wandb_integration
from lightning_rect.app.wandb import WandbLogger, publish_results

DIGITS = str(ROOT / "configs" / "digits.yaml")
WANDB = str(ROOT / "callbacks" / "wandb.yaml")
# A fixed CSV version (set before the W&B preset turns the logger into a list), so both runs below
# use the same log folder.
ARGS = [
    "fit",
    "--config",
    DIGITS,
    "--trainer.logger.init_args.version=same",
    "--config",
    WANDB,
    "--trainer.max_epochs=2",
    "--model.init_args.hidden_sizes=[64]",
    "--trainer.enable_progress_bar=false",
]


def wandb_env(tmp_path: Path, mode: str) -> dict[str, str]:
    """W&B's settings and caches inside tmp_path: nothing read from or written to the home folder."""
    return {
        "WANDB_MODE": mode,
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb_config"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb_cache"),
        "WANDB_DATA_DIR": str(tmp_path / "wandb_data"),
        "WANDB_SILENT": "true",
    }


def run_with_wandb(tmp_path: Path, mode: str, *args: str) -> None:
    """A CLI command in this process with W&B in ``mode`` (its settings and caches under tmp_path), in a
    W&B session of its own, as in a process of its own: W&B reads its settings once per session."""
    import wandb

    with pytest.MonkeyPatch.context() as patch:
        for name, value in wandb_env(tmp_path, mode).items():
            patch.setenv(name, value)
        try:
            run_in_process(tmp_path, *args)
        finally:
            wandb.teardown()


@pytest.mark.slow  # two CLI runs that train
def test_offline_run_holds_metrics_config_and_results_then_disabled_rerun(tmp_path, no_summary_figures):
    import wandb

    with pytest.MonkeyPatch.context() as patch:  # the session's end checked apart from the command's
        patch.setattr(wandb, "teardown", lambda: None)
        run_with_wandb(tmp_path, "offline", *ARGS)
        assert wandb.run is None  # ended with the command: the next one in this process starts its own
    wandb.teardown()
    log_dir = tmp_path / "runs" / "digits" / "same"
    results = json.loads((log_dir / "results.json").read_text())
    [run_dir] = list((tmp_path / "runs" / "wandb").glob("offline-run-*"))
    run = read_offline_run(run_dir)

    # Every metric, through the logger; the test values are those of the selected checkpoint.
    for key in ("train/loss", "val/err", "val/sparsity/mean", "test/err", "test/sparsity/mean", "test/dead/mean"):
        assert key in run.history, key
    # results.json: in the summary and attached as a file.
    for key in ("test/err", "test/sparsity/mean", "best_val", "best_epoch", "checkpoint", "fit_seconds"):
        assert run.summary[key] == results[key], key
    assert json.loads((run_dir / "files" / "results.json").read_text()) == results
    # The full resolved config, once: command-line keys, linked sizes included, no second bare copy.
    assert run.config["model.init_args.hidden_sizes"] == [64]
    assert run.config["model.init_args.in_features"] == 64 and run.config["model.init_args.num_classes"] == 10
    assert run.config["trainer.max_epochs"] == 2
    assert run.config["data.class_path"] == "lightning_rect.data.DigitsDataModule"
    assert not {"hidden_sizes", "l1", "lr", "activation"} & set(run.config), "Lightning's partial hparams copy"
    assert (run_dir / "files" / "config.yaml").read_text() == (log_dir / "config.yaml").read_text()
    assert {"config.yaml", "results.json"} <= set(run.files)

    # Same folder again, W&B disabled: config.yaml exists there already, and that is fine; the first
    # run's W&B record is left as it was.
    run_with_wandb(tmp_path, "disabled", *ARGS, "--trainer.max_epochs=1")
    assert json.loads((log_dir / "results.json").read_text())["epochs"] == 1
    assert len(list((tmp_path / "runs" / "wandb").glob("offline-run-*"))) == 1
    again = read_offline_run(run_dir)
    assert again.summary == run.summary and again.history == run.history
    assert wandb.run is None


@pytest.fixture
def wandb_session():
    """A W&B session of the test's own, as in a process of its own: W&B reads its settings (WANDB_MODE,
    its folders) once per session, so one a test left behind would impose its mode on the next."""
    import wandb

    wandb.teardown()
    yield
    wandb.teardown()


def test_a_wandb_run_open_before_the_command_is_the_callers_and_stays_open(tmp_path, monkeypatch, wandb_session):
    import wandb

    from lightning_rect.app.wandb import runs_end_with_the_command

    monkeypatch.setenv("WANDB_MODE", "disabled")
    mine = wandb.init(dir=tmp_path)
    try:
        with runs_end_with_the_command():
            pass
        assert wandb.run is mine
    finally:
        wandb.finish()
    with pytest.raises(RuntimeError), runs_end_with_the_command():
        started = wandb.init(dir=tmp_path)
        raise RuntimeError
    assert wandb.run is None and started is not None


class FakeRun:
    """Stands in for a W&B run: records summary updates and saved files."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = str(run_dir)
        self.summary: dict = {}
        self.saved: list[str] = []

    def save(self, path: str, base_path: str, policy: str) -> None:
        self.saved.append(path)


@pytest.fixture
def results_file(tmp_path):
    results = {"test/err": 0.1, "best_epoch": 3, "checkpoint": None}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return results, path


@pytest.fixture
def wandb_calls(monkeypatch, tmp_path):
    """Every way publish_results could reach W&B, recorded: starting a run, attaching a file."""
    import wandb

    calls: list[str] = []
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setattr(wandb, "init", lambda *a, **k: calls.append("wandb.init"))
    real_attach = wandb_integration.attach_file

    def attach(run, path):
        calls.append(f"attach_file {path.name}")
        real_attach(run, path)

    monkeypatch.setattr(wandb_integration, "attach_file", attach)
    return calls


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def test_publish_results_without_wandb_logger_does_nothing(tmp_path, results_file, wandb_calls):
    """Only a CSVLogger: no W&B run is started, nothing is attached, no file appears anywhere."""
    import wandb

    results, path = results_file
    trainer = Trainer(
        logger=CSVLogger(tmp_path / "logs"),
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    before = files_under(tmp_path)
    publish_results(trainer, results, path)
    assert wandb_calls == []
    assert wandb.run is None
    assert files_under(tmp_path) == before
    assert json.loads(path.read_text()) == results  # the file itself is left alone


def test_publish_results_with_wandb_logger_fills_summary_and_attaches(tmp_path, results_file, wandb_calls):
    """The counterpart, with the same recording: beside the CSVLogger a W&B logger (a fake run, no
    network) gets the results as its summary and a copy of results.json in its run folder."""
    results, path = results_file
    (tmp_path / "run").mkdir()
    run = FakeRun(tmp_path / "run")
    trainer = Trainer(
        logger=[CSVLogger(tmp_path / "logs"), WandbLogger(experiment=run)],
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    publish_results(trainer, results, path)
    assert wandb_calls == ["attach_file results.json"]
    assert run.summary == {"test/err": 0.1, "best_epoch": 3}  # None values left out
    assert run.saved == [str(tmp_path / "run" / "results.json")]
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == results


@pytest.mark.slow  # one CLI run that trains
def test_with_wandb_as_the_only_logger_a_runs_files_share_its_own_folder_not_the_shared_root(tmp_path):
    """W&B's save_dir is the root all its runs share: results.json, config.yaml and firing_rates.json
    go to the run's own folder, beside its checkpoints."""
    logger = json.dumps(
        {
            "class_path": "lightning.pytorch.loggers.WandbLogger",
            "init_args": {"offline": True, "save_dir": "runs", "project": "p"},
        }
    )
    run_with_wandb(
        tmp_path,
        "offline",
        "fit",
        "--config",
        DIGITS,
        "--model.init_args.hidden_sizes=[8]",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger={logger}",
    )
    [results] = list((tmp_path / "runs" / "p").glob("*/results.json"))
    folder = results.parent
    assert (folder / "config.yaml").is_file() and (folder / "firing_rates.json").is_file()
    assert list(folder.glob("checkpoints/best-epoch=*.ckpt"))
    assert not (tmp_path / "runs" / "config.yaml").exists() and not (tmp_path / "runs" / "results.json").exists()


@pytest.mark.slow  # two fits with W&B
def test_a_rectcli_of_ones_own_ends_the_run_its_logger_started(
    tmp_path, monkeypatch, no_summary_figures, wandb_session
):
    """As the command does: two fits by RectCLI in one process (a notebook) are two W&B runs, not one."""
    import sys

    import wandb

    from lightning_rect import SparseMLP
    from lightning_rect.app.cli import RectCLI
    from lightning_rect.data import DigitsDataModule

    for name, value in wandb_env(tmp_path, "offline").items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    logger = {"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": {"offline": True, "save_dir": "runs"}}
    args = [
        "fit",
        "--seed_everything=0",
        "--model.hidden_sizes=[8]",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
    ]
    for _ in range(2):
        RectCLI(SparseMLP, DigitsDataModule, args=[*args, f"--trainer.logger={json.dumps(logger)}"])
        assert wandb.run is None
    assert len(list(tmp_path.rglob("offline-run-*"))) == 2
