import json

import pytest
from pathlib import Path

from conftest import ROOT

DIGITS = str(ROOT / "configs" / "digits.yaml")
FAST = ["--trainer.max_epochs=3", "--model.init_args.hidden_sizes=[256,256]", "--trainer.enable_progress_bar=false"]


def read_results(tmp_path, name="digits") -> dict:
    [results_file] = list(Path(tmp_path, "runs", name).glob("version_*/results.json"))
    return json.loads(results_file.read_text())


@pytest.mark.slow
def test_digits_default_fit_then_test_writes_results_json(run_cli, tmp_path):
    """The embedded default as a user runs it: fit + test well under a minute, <= 4% test error."""
    proc = run_cli("fit", "--config", DIGITS, "--trainer.enable_progress_bar=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(tmp_path)
    assert results["model"] == "SparseMLP" and results["data"] == "DigitsDataModule"
    assert results["selection_metric"] == "val/err"
    assert results["epochs"] == 30
    assert results["test/err"] <= 0.04
    assert results["best_val"] <= 0.04
    assert Path(results["checkpoint"]).name == f"best-epoch={results['best_epoch']}.ckpt"
    assert "test error" in proc.stdout
    # numbered from 0 as in the checkpoint name and the progress bar
    assert f"best epoch {results['best_epoch']} of 0-29" in proc.stdout
    # the L1 penalty adds exact zeros: the same run without it is less sparse (an untrained rectifier
    # net already has about 50% zeros, so a fixed threshold would prove little)
    proc = run_cli("fit", "--config", DIGITS, "--trainer.enable_progress_bar=false", "--model.init_args.l1=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    without_l1 = json.loads(sorted(Path(tmp_path, "runs", "digits").glob("version_*/results.json"))[-1].read_text())
    assert results["test/sparsity/mean"] > without_l1["test/sparsity/mean"] + 0.03
    for k in (1, 2, 3):
        assert 0 < results[f"test/sparsity/layer_{k}"] < 1
        assert 0 <= results[f"test/dead/layer_{k}"] < 0.5


@pytest.mark.slow
def test_tanh_units_are_not_sparse(run_cli, tmp_path):
    proc = run_cli("fit", "--config", DIGITS, "--model.init_args.activation=tanh", *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(tmp_path)
    assert results["test/sparsity/mean"] < 0.05
    assert results["epochs"] == 3


@pytest.mark.slow
def test_unknown_activation_exits_before_training_with_valid_names(run_cli):
    proc = run_cli("fit", "--config", DIGITS, "--model.init_args.activation=relu6")
    assert proc.returncode == 2
    assert "unknown activation 'relu6'" in proc.stderr
    assert "rectifier, sharp_softplus, sigmoid, softplus, tanh" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Epoch 0" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("override,expected", [
    ("--model.init_args.reconstruction=mse", "unknown reconstruction 'mse'; valid reconstruction names: linear,"),
    ("--model.init_args.noise=gaussian", "unknown noise 'gaussian'; valid noise names: masking, salt_and_pepper"),
])
def test_unknown_registry_names_in_pretraining(cli_in_process, override, expected):
    code, stderr = cli_in_process("fit", "--config", str(ROOT / "configs" / "digits_pretrain.yaml"), override)
    assert code == 2
    assert expected in stderr


def test_misspelled_key_gets_the_parser_error(cli_in_process):
    code, stderr = cli_in_process("fit", "--config", DIGITS, "--model.init_args.l1x=3")
    assert code == 2
    assert "l1x" in stderr
    assert "Traceback" not in stderr


def test_missing_mnist_is_one_line(cli_in_process, tmp_path):
    code, stderr = cli_in_process("fit", "--config", DIGITS, "--data=lightning_rect.data.MNISTDataModule",
                                  f"--data.data_dir={tmp_path / 'nowhere'}")
    assert code == 2
    assert "MNIST files not found in" in stderr and "download" in stderr
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_validate_subcommand_still_works(run_cli):
    proc = run_cli("validate", "--config", DIGITS, "--model.init_args.hidden_sizes=[32]")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "val/err" in proc.stdout


@pytest.mark.slow
def test_predict_subcommand_returns_a_class_per_example(run_cli, tmp_path):
    proc = run_cli("fit", "--config", DIGITS, *FAST, "--trainer.max_epochs=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    checkpoint = read_results(tmp_path)["checkpoint"]
    proc = run_cli("predict", "--config", DIGITS, "--model.init_args.hidden_sizes=[256,256]", f"--ckpt_path={checkpoint}",
                   "--trainer.enable_progress_bar=false")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_data_modules_have_short_names_like_models(cli_in_process):
    code, stderr = cli_in_process("fit", "--model=SparseMLP", "--data=DigitsDataModule", "--trainer.fast_dev_run=true",
                                  "--model.init_args.hidden_sizes=[8]", "--trainer.enable_progress_bar=false",
                                  "--trainer.logger=false")
    assert code == 0, stderr[-2000:]


def test_help_mentions_reproduce_and_configs(capsys):
    from lightning_rect.app.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "reproduce --help" in out and "configs DIR" in out


@pytest.mark.slow
def test_lr_scheduler_from_the_command_line_changes_the_learning_rate(run_cli, tmp_path):
    proc = run_cli("fit", "--config", DIGITS, *FAST, "--lr_scheduler=StepLR", "--lr_scheduler.step_size=1",
                   "--lr_scheduler.gamma=0.1", "--trainer.callbacks+=LearningRateMonitor")
    assert proc.returncode == 0, proc.stderr[-2000:]
    [metrics] = list((tmp_path / "runs" / "digits").glob("version_*/metrics.csv"))
    import csv

    with metrics.open() as f:
        lrs = [float(r["lr-SGD"]) for r in csv.DictReader(f) if r.get("lr-SGD")]
    assert lrs[0] == pytest.approx(0.03) and lrs[-1] == pytest.approx(0.0003)


def test_rect_cli_takes_model_and_data_classes_as_lightning_cli_does(tmp_path, monkeypatch):
    import sys

    from lightning_rect import SparseMLP
    from lightning_rect.app.cli import RectCLI
    from lightning_rect.data import DigitsDataModule

    class MyCLI(RectCLI):  # a subclass, the classes positional, no subclass mode
        pass

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    cli = MyCLI(SparseMLP, DigitsDataModule, run=False, args=["--model.hidden_sizes=[8]", "--trainer.logger=false"])
    assert type(cli.model) is SparseMLP and type(cli.datamodule) is DigitsDataModule
    assert (cli.model.hparams.in_features, cli.model.hparams.num_classes) == (64, 10)  # linked from the data


def test_a_plain_lightning_cli_links_the_sizes_with_link_data_sizes(tmp_path, monkeypatch):
    import sys

    from lightning.pytorch.cli import LightningCLI

    from lightning_rect import SparseMLP
    from lightning_rect.app.cli import link_data_sizes
    from lightning_rect.data import DigitsDataModule

    class PlainCLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            link_data_sizes(parser, self.subclass_mode_model)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    cli = PlainCLI(SparseMLP, DigitsDataModule, run=False, args=["--model.hidden_sizes=[8]", "--trainer.logger=false"])
    assert (cli.model.hparams.in_features, cli.model.hparams.num_classes) == (64, 10)
    cli = PlainCLI(run=False, args=["--model=SparseMLP", "--data=DigitsDataModule", "--model.init_args.hidden_sizes=[8]",
                                    "--trainer.logger=false"])  # subclass mode
    assert (cli.model.hparams.in_features, cli.model.hparams.num_classes) == (64, 10)


def test_fit_draws_lightnings_progress_bar_every_50_batches_unless_switched_off():
    from lightning.pytorch.callbacks import TQDMProgressBar

    from lightning_rect import SparseMLP
    from lightning_rect.app.cli import fit_callbacks

    model = SparseMLP(64, 10, [8])
    [bar] = [cb for cb in fit_callbacks([], model, {}) if isinstance(cb, TQDMProgressBar)]
    assert type(bar) is TQDMProgressBar and bar.refresh_rate == 50
    assert not [cb for cb in fit_callbacks([], model, {"enable_progress_bar": False}) if isinstance(cb, TQDMProgressBar)]
    own = TQDMProgressBar(refresh_rate=7)
    assert not [cb for cb in fit_callbacks([own], model, {}) if isinstance(cb, TQDMProgressBar)]  # the config's is kept
