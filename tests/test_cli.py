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
def test_digits_default_fit_then_test_writes_results_json(tmp_path, monkeypatch, capsys):
    """The embedded default as `make run` runs it (here in this process): fit + test, <= 4% test error."""
    from lightning_rect.app.cli import main

    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", DIGITS, "--trainer.enable_progress_bar=false"])
    stdout = capsys.readouterr().out
    results = read_results(tmp_path)
    assert results["model"] == "SparseMLP" and results["data"] == "DigitsDataModule"
    assert results["selection_metric"] == "val/err"
    assert results["epochs"] == 30
    assert results["test/err"] <= 0.04
    assert results["best_val"] <= 0.04
    assert Path(results["checkpoint"]).name == f"best-epoch={results['best_epoch']}.ckpt"
    assert "test error" in stdout
    # numbered from 0 as in the checkpoint name and the progress bar
    assert f"best epoch {results['best_epoch']} of 0-29" in stdout
    # (that L1 adds exact zeros is test_sparsity_monitor's claim test)
    for k in (1, 2, 3):
        assert 0 < results[f"test/sparsity/layer_{k}"] < 1
        assert 0 <= results[f"test/dead/layer_{k}"] < 0.5


def test_unknown_activation_exits_before_training_with_valid_names(cli_in_process, tmp_path):
    code, stderr = cli_in_process("fit", "--config", DIGITS, "--model.init_args.activation=relu6")
    assert code == 2
    assert "unknown activation 'relu6'" in stderr
    assert "rectifier, sharp_softplus, sigmoid, softplus, tanh" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "runs").exists()  # stopped before anything was built or written


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


def test_validate_subcommand_still_works(tmp_path, monkeypatch, capsys):
    from lightning_rect.app.cli import main

    monkeypatch.chdir(tmp_path)
    main(["validate", "--config", DIGITS, "--model.init_args.hidden_sizes=[16]"])
    assert "val/err" in capsys.readouterr().out


def test_predict_subcommand_runs_on_a_finished_runs_checkpoint(finished_run, cli_in_process):
    code, stderr = cli_in_process("predict", "--config", DIGITS, "--model.init_args.hidden_sizes=[16]",
                                  f"--ckpt_path={finished_run.checkpoint}", "--trainer.enable_progress_bar=false")
    assert code == 0, stderr[-2000:]


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


def test_lr_scheduler_from_the_command_line_changes_the_learning_rate(cli_in_process, no_summary_figures, tmp_path):
    code, stderr = cli_in_process("fit", "--config", DIGITS, "--trainer.max_epochs=3", "--model.init_args.hidden_sizes=[16]",
                                  "--trainer.enable_progress_bar=false", "--trainer.limit_train_batches=5",
                                  "--lr_scheduler=StepLR", "--lr_scheduler.step_size=1", "--lr_scheduler.gamma=0.1",
                                  "--trainer.callbacks+=LearningRateMonitor")
    assert code == 0, stderr[-2000:]
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
