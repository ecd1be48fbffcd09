import json
import os
import sys
from pathlib import Path

import pytest
from conftest import ROOT

DIGITS = str(ROOT / "configs" / "digits.yaml")
FAST = ["--trainer.max_epochs=3", "--model.init_args.hidden_sizes=[256,256]", "--trainer.enable_progress_bar=false"]


def with_stdout(run, *args: str) -> tuple[int, str, str]:
    """``cli_in_process``'s (exit code, stderr), and what it printed (which that fixture drops)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code, stderr = run(*args)
    return code, out.getvalue(), stderr


def read_results(tmp_path, name="digits") -> dict:
    [results_file] = list(Path(tmp_path, "runs", name).glob("version_*/results.json"))
    return json.loads(results_file.read_text())


@pytest.mark.slow
def test_digits_default_fit_then_test_writes_results_json(tmp_path, monkeypatch, capsys):
    """The embedded default as `make run` runs it (here in this process), cut to 5 of its 30 epochs: fit +
    test, results.json and the printed summary. The whole run's figures (2.33% test error) are measured by
    `make run` and given in the README; 5 epochs reach 5.0%, where chance is 90%."""
    from lightning_rect.app.cli import main

    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", DIGITS, "--trainer.enable_progress_bar=false", "--trainer.max_epochs=5"])
    stdout = capsys.readouterr().out
    results = read_results(tmp_path)
    assert results["model"] == "SparseMLP" and results["data"] == "DigitsDataModule"
    assert results["selection_metric"] == "val/err"
    assert results["epochs"] == 5
    assert results["test/err"] <= 0.08
    assert results["best_val"] <= 0.08
    assert Path(results["checkpoint"]).name == f"best-epoch={results['best_epoch']}.ckpt"
    assert "test error" in stdout
    # numbered from 0 as in the checkpoint name and the progress bar
    assert f"best epoch {results['best_epoch']} of 0-4" in stdout
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


@pytest.mark.parametrize(
    "override,expected",
    [
        ("--model.init_args.reconstruction=mse", "unknown reconstruction 'mse'; valid reconstruction names: linear,"),
        ("--model.init_args.noise=gaussian", "unknown noise 'gaussian'; valid noise names: masking, salt_and_pepper"),
    ],
)
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
    code, stderr = cli_in_process(
        "fit",
        "--config",
        DIGITS,
        "--data=lightning_rect.data.MNISTDataModule",
        f"--data.data_dir={tmp_path / 'nowhere'}",
    )
    assert code == 2
    assert "MNIST files not found in" in stderr and "download" in stderr
    assert "Traceback" not in stderr


def test_validate_subcommand_still_works(tmp_path, monkeypatch, capsys):
    from lightning_rect.app.cli import main

    monkeypatch.chdir(tmp_path)
    main(["validate", "--config", DIGITS, "--model.init_args.hidden_sizes=[16]"])
    assert "val/err" in capsys.readouterr().out


def test_predict_writes_each_test_examples_class_into_the_run_folder_and_says_where(
    finished_run, cli_in_process, tmp_path
):
    import torch

    from lightning_rect import SparseMLP
    from lightning_rect.data import DigitsDataModule
    from lightning_rect.models.batch import split_batch

    code, out, stderr = with_stdout(
        cli_in_process,
        "predict",
        "--config",
        DIGITS,
        "--model.init_args.hidden_sizes=[16]",
        f"--ckpt_path={finished_run.checkpoint}",
        "--trainer.enable_progress_bar=false",
    )
    assert code == 0, stderr[-2000:]
    path = Path("runs", "digits", "version_0", "predictions.pt")
    assert f"predictions (300 examples, int64 tensor of shape [300]) -> {path}" in out
    predicted = torch.load(tmp_path / path, weights_only=True)

    model = SparseMLP.load_from_checkpoint(finished_run.checkpoint, map_location="cpu").eval()
    data = DigitsDataModule()
    data.prepare_data()
    data.setup("predict")
    with torch.no_grad():
        expected = torch.cat([model(split_batch(batch)[0]).argmax(dim=-1) for batch in data.predict_dataloader()])
    assert predicted.shape == (300,) and torch.equal(predicted, expected)  # one class per test example, in order


def test_fast_dev_run_runs_a_batch_of_fit_and_test_and_writes_no_run(cli_in_process, tmp_path):
    code, stderr = cli_in_process(
        "fit",
        "--config",
        DIGITS,
        "--trainer.fast_dev_run=true",
        "--model.init_args.hidden_sizes=[8]",
        "--trainer.enable_progress_bar=false",
    )
    assert code == 0, stderr[-2000:]
    assert "Traceback" not in stderr
    [note] = [line for line in stderr.splitlines() if line.startswith("fast_dev_run:")]
    assert note == (
        "fast_dev_run: fit and test ran 1 batch each as a check; nothing was written (no run folder, "
        "checkpoint or results.json)"
    )
    assert not (tmp_path / "runs").exists()
    assert not [p for p in tmp_path.rglob("*") if p.suffix == ".ckpt" or p.name in ("results.json", "config.yaml")]
    assert list(tmp_path.iterdir()) == []  # nor firing_rates.json through fast_dev_run's stand-in logger


def test_a_fit_without_a_logger_gets_a_run_folder_of_its_own(cli_in_process, tmp_path):
    args = [
        "fit",
        "--config",
        DIGITS,
        "--trainer.logger=false",
        "--model.init_args.hidden_sizes=[8]",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.enable_progress_bar=false",
    ]
    code, out, stderr = with_stdout(cli_in_process, *args)
    assert code == 0, stderr[-2000:]
    run = Path("runs", "sparsemlp_digits", "version_0")
    assert f"no logger (trainer.logger=false): this run's files go to {run}" in out
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]  # nothing in the working folder itself
    assert sorted(p.name for p in (tmp_path / run).iterdir()) == ["checkpoints", "config.yaml", "results.json"]
    results = json.loads((tmp_path / run / "results.json").read_text())
    # absolute: valid from any folder
    assert results["checkpoint"] == str(tmp_path / run / "checkpoints" / "best-epoch=0.ckpt")
    assert results["epochs"] == 1 and 0 <= results["test/err"] <= 1
    code, stderr = cli_in_process(*args)  # a second run: a folder of its own, the first one unchanged
    assert code == 0, stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "runs" / "sparsemlp_digits").iterdir()) == ["version_0", "version_1"]


# -- the user's own module: --import --------------------------------------------------------------
SWISH = """
import torch
from torch import nn
from lightning_rect import ACTIVATIONS

CALLS = []


@ACTIVATIONS.register("my_swish")
class MySwish(nn.Module):
    def forward(self, x):
        CALLS.append(x.shape)
        return x * torch.sigmoid(x)
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """``tmp_path/<name>.py`` registering the activation ``my_swish``; the registry, sys.path and sys.modules
    restored afterwards."""
    import sys

    from lightning_rect import ACTIVATIONS

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(ACTIVATIONS, "_entries", dict(ACTIVATIONS._entries))
    monkeypatch.setattr(ACTIVATIONS, "_origins", dict(ACTIVATIONS._origins))
    names = []

    def write(name: str, folder: Path = tmp_path) -> Path:
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.py").write_text(SWISH)
        names.append(name)
        return folder / f"{name}.py"

    yield write
    for name in names:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("how", ["module", "file"])
def test_an_activation_registered_in_ones_own_module_is_used_with_import(cli_in_process, user_module, tmp_path, how):
    import sys

    path = user_module("my_acts", tmp_path / "elsewhere" if how == "file" else tmp_path)
    spec = str(path) if how == "file" else "my_acts"
    code, stderr = cli_in_process(
        "fit",
        "--import",
        spec,
        "--config",
        DIGITS,
        "--trainer.fast_dev_run=true",
        "--model.init_args.hidden_sizes=[8]",
        "--model.init_args.activation=my_swish",
        "--trainer.enable_progress_bar=false",
    )
    assert code == 0, stderr[-2000:]
    calls = sys.modules["my_acts"].CALLS
    assert len(calls) >= 2 and all(shape[-1] == 8 for shape in calls)  # the 8 hidden units, in fit and test


def test_without_import_the_unknown_name_says_how_to_add_it_and_a_missing_module_is_one_line(
    cli_in_process, user_module
):
    user_module("my_acts")
    code, stderr = cli_in_process("fit", "--config", DIGITS, "--model.init_args.activation=my_swish")
    assert code == 2
    [line] = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: unknown activation 'my_swish'; valid activation names: rectifier,")
    assert "(on the command line: --import your_module)" in line
    code, stderr = cli_in_process("fit", "--config", DIGITS, "--model.init_args.activation=rectifer")
    assert code == 2 and "unknown activation 'rectifer' (did you mean 'rectifier'?)" in stderr
    code, stderr = cli_in_process("fit", "--import=my_actz", "--config", DIGITS)
    assert code == 2 and "Traceback" not in stderr
    assert "error: --import my_actz: no module 'my_actz' in " in stderr


def test_data_modules_have_short_names_like_models(cli_in_process):
    code, stderr = cli_in_process(
        "fit",
        "--model=SparseMLP",
        "--data=DigitsDataModule",
        "--trainer.fast_dev_run=true",
        "--model.init_args.hidden_sizes=[8]",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
    )
    assert code == 0, stderr[-2000:]


def test_help_mentions_reproduce_and_configs(capsys):
    from lightning_rect.app.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "reproduce --help" in out and "configs DIR" in out
    assert "{fit,validate,test,predict}" in out  # a command line that names none: every subcommand is offered


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_only_the_named_subcommands_parser_is_built_and_it_parses_as_before(subcommand, monkeypatch, capsys):
    """Building a subcommand's parser (the Trainer's, model's and data's arguments) was most of the time
    a command took before reading its config; the three not named are no longer built."""
    import yaml

    from lightning_rect.app.cli import RectCLI

    class CountingCLI(RectCLI):
        built: list[str] = []

        def init_parser(self, **kwargs):
            CountingCLI.built.append(kwargs.get("description", ""))
            return super().init_parser(**kwargs)

    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    with pytest.raises(SystemExit) as exit_:
        CountingCLI(args=[subcommand, "--config", DIGITS, "--model.init_args.hidden_sizes=[8]", "--print_config"])
    assert exit_.value.code == 0
    assert len(CountingCLI.built) == 2  # the main parser and this subcommand's
    assert yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["hidden_sizes"] == [8]
    # on the class, as a subclass's own staticmethod subcommands() may call it: Lightning's four
    assert list(RectCLI.subcommands()) == ["fit", "validate", "test", "predict"]


def test_lr_scheduler_from_the_command_line_changes_the_learning_rate(cli_in_process, no_summary_figures, tmp_path):
    code, stderr = cli_in_process(
        "fit",
        "--config",
        DIGITS,
        "--trainer.max_epochs=3",
        "--model.init_args.hidden_sizes=[16]",
        "--trainer.enable_progress_bar=false",
        "--trainer.limit_train_batches=5",
        "--lr_scheduler=StepLR",
        "--lr_scheduler.step_size=1",
        "--lr_scheduler.gamma=0.1",
        "--trainer.callbacks+=LearningRateMonitor",
    )
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
    cli = PlainCLI(
        run=False,
        args=[
            "--model=SparseMLP",
            "--data=DigitsDataModule",
            "--model.init_args.hidden_sizes=[8]",
            "--trainer.logger=false",
        ],
    )  # subclass mode
    assert (cli.model.hparams.in_features, cli.model.hparams.num_classes) == (64, 10)


def test_fit_draws_lightnings_progress_bar_every_50_batches_unless_switched_off():
    from lightning.pytorch.callbacks import TQDMProgressBar

    from lightning_rect import SparseMLP
    from lightning_rect.app.cli import fit_callbacks

    model = SparseMLP(64, 10, [8])
    [bar] = [cb for cb in fit_callbacks([], model, {}) if isinstance(cb, TQDMProgressBar)]
    assert type(bar) is TQDMProgressBar and bar.refresh_rate == 50
    assert not [
        cb for cb in fit_callbacks([], model, {"enable_progress_bar": False}) if isinstance(cb, TQDMProgressBar)
    ]
    own = TQDMProgressBar(refresh_rate=7)
    assert not [cb for cb in fit_callbacks([own], model, {}) if isinstance(cb, TQDMProgressBar)]  # the config's is kept


# A ddp_spawn fit through the CLI (results.json holds the workers' step, epochs and a test recounted with the
# kept checkpoint): the compatibility matrix's cell ddp_spawn x CLI (tests/compat/cells.py, cli_distributed).


def checksums(folder: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_test_with_a_runs_own_config_naming_its_version_writes_a_new_version_and_leaves_the_run_alone(
    finished_run, cli_in_process, tmp_path
):
    """Issue 32 item 3: a config that names a run's folder (a fixed ``version``; an absolute ``save_dir``, as in a
    copied run folder) made ``test`` write into that run (metrics.csv 121 rows -> 1, its config.yaml replaced)."""
    import shutil

    import yaml

    shutil.copytree(finished_run.cwd / "runs", tmp_path / "runs")
    run = tmp_path / "runs" / "digits" / "version_0"
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["trainer"]["logger"]["init_args"].update(version=0, save_dir=str(tmp_path / "runs"))
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(config))
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    before = checksums(run)

    code, stderr = cli_in_process(
        "test", "--config", "old.yaml", f"--ckpt_path={best}", "--trainer.enable_progress_bar=false"
    )
    assert code == 0, stderr[-2000:]
    assert checksums(run) == before  # not one file of the run changed
    assert f"note: {run} holds the files of an earlier run, so this test writes into a new version folder" in stderr
    new = run.parent / "version_1"
    assert {"metrics.csv", "config.yaml"} <= {p.name for p in new.iterdir()}
    saved = yaml.safe_load((new / "config.yaml").read_text())
    # the new run's own config names no folder of this machine and no version another command would reuse
    assert saved["trainer"]["logger"]["init_args"]["version"] is None
    assert saved["trainer"]["logger"]["init_args"]["save_dir"] == "runs"
    assert saved["ckpt_path"] == str(best.relative_to(tmp_path))


def test_a_remote_config_is_read_only_over_https_and_only_when_opted_in(monkeypatch):
    """Issue 32 item 1 (the refusals are cases of tests/test_bad_inputs.py): the opt-in lets https through."""
    from lightning_rect.app.config_files import check_config_files
    from lightning_rect.errors import ConfigError

    monkeypatch.delenv("LIGHTNING_RECT_ALLOW_REMOTE_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="a config from a URL is not read"):
        check_config_files(["fit", "--config=https://example.org/x.yaml"])
    monkeypatch.setenv("LIGHTNING_RECT_ALLOW_REMOTE_CONFIG", "1")
    check_config_files(["fit", "--config", "https://example.org/x.yaml"])  # read by jsonargparse, with the caps
    with pytest.raises(ConfigError, match="never s3://"):
        check_config_files(["fit", "-c", "s3://bucket/x.yaml"])


def test_what_fit_adds_to_the_config_is_said_once_and_kept_above_the_saved_config(finished_run):
    import yaml

    from lightning_rect.app.cli import ADDED_NOTE

    said = [line for line in finished_run.stdout.splitlines() if line.startswith("fit adds to the config: ")]
    assert len(said) == 1
    added = said[0].removeprefix("fit adds to the config: ").split(", ")
    for name in (
        "DivergenceGuard",
        "Timer",
        "ModelCheckpoint(best-{epoch} on val/err)",
        "ModelCheckpoint(last)",
        "AtomicCheckpointIO",
    ):
        assert name in added
    saved = (finished_run.folder / "config.yaml").read_text()
    assert saved.splitlines()[0] == f"# {ADDED_NOTE}: {', '.join(added)}"
    config = yaml.safe_load(saved)  # still the config it was: the note is a comment
    assert [cb["class_path"] for cb in config["trainer"]["callbacks"]] == ["lightning_rect.callbacks.SparsityMonitor"]


def test_under_a_2gb_address_space_limit_the_command_says_so_in_one_line(tmp_path):
    """``python -m lightning_rect`` starts without torch (the package's names are imported when first
    used), so a limit too low to map torch's libraries is one line naming it, not a traceback."""
    import os
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))

    proc = subprocess.run(
        [sys.executable, "-m", "lightning_rect", "fit", "--config", "configs/digits.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "ran out of memory" in lines[0] and "ulimit -v" in lines[0], proc.stderr[-2000:]


def test_results_json_names_the_version_and_the_commit_that_wrote_it(finished_run):
    import json
    import subprocess

    import lightning_rect

    results = json.loads((finished_run.folder / "results.json").read_text())
    assert results["lightning_rect"] == lightning_rect.__version__
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=Path(lightning_rect.__file__).parent, capture_output=True, text=True
    )
    if head.returncode == 0:  # a checkout: its commit, marked when files differ from it
        assert results["git_commit"].removesuffix("+dirty") == head.stdout.strip()
    else:
        assert results["git_commit"] is None


THREAD_REPORT = """
import os

import lightning as L
import torch


class Report(L.Callback):
    def on_fit_start(self, trainer, pl_module):
        print(f"threads {torch.get_num_threads()} wait {os.environ.get('OMP_WAIT_POLICY')}", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "given,env,expected",
    [
        ([], {}, f"threads {os.cpu_count()} wait passive"),  # the command's default: every core, idle ones sleep
        # the option over the environment's count; the environment's wait policy kept
        (["--threads=1"], {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "active"}, "threads 1 wait active"),
    ],
)
def test_threads_default_to_the_cores_with_a_passive_wait_and_yield_to_the_option_or_environment(
    tmp_path, given, env, expected
):
    import subprocess
    import sys

    (tmp_path / "thread_report.py").write_text(THREAD_REPORT)
    environment = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    result = subprocess.run(
        [sys.executable, "-m", "lightning_rect", "fit", "--import", "thread_report", "--config", DIGITS, *given,
         "--trainer.fast_dev_run=true", "--model.init_args.hidden_sizes=[8]", "--trainer.enable_progress_bar=false",
         "--trainer.callbacks+=thread_report.Report"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**environment, "WANDB_MODE": "disabled", **env},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected in result.stdout, result.stdout[-2000:]


# ---- RectCLI as an outside script uses it -------------------------------------------------------------


def test_a_subclass_that_offers_fewer_subcommands_still_helps_fits_and_refuses_the_rest_in_one_line(
    monkeypatch, capsys, tmp_path
):
    from lightning.pytorch.cli import LightningCLI

    from lightning_rect.app.cli import RectCLI
    from lightning_rect.errors import ConfigError

    class NoPredict(RectCLI):
        @staticmethod
        def subcommands():
            return {k: v for k, v in LightningCLI.subcommands().items() if k != "predict"}

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    with pytest.raises(SystemExit) as exit_:
        NoPredict(args=["--help"])
    assert exit_.value.code == 0 and "{fit,validate,test}" in capsys.readouterr().out
    NoPredict(args=["fit", "--config", DIGITS, "--trainer.fast_dev_run=true", "--model.init_args.hidden_sizes=[8]"])
    with pytest.raises(ConfigError, match=r"unknown subcommand 'predict' \(choose from fit, validate, test\)"):
        NoPredict(args=["predict", "--config", DIGITS])


@pytest.mark.parametrize("given,expected", [([], 1000), (["--trainer.max_epochs=-1"], -1)])
def test_a_fit_without_max_epochs_gets_lightnings_1000_not_an_endless_run(
    given, expected, cli_in_process, no_summary_figures, monkeypatch, capsys
):
    """fit adds a Timer (the fit time across a resume), and Lightning lifts an unset max_epochs once a Timer is
    there; the 1000 epochs Lightning gives an unset one are kept, and said."""
    from lightning_rect import SparseMLP

    seen, epoch_end = [], SparseMLP.on_train_epoch_end

    def stop_after_one(self):
        epoch_end(self)
        seen.append(self.trainer.max_epochs)
        self.trainer.should_stop = True

    monkeypatch.setattr(SparseMLP, "on_train_epoch_end", stop_after_one)
    code, out, stderr = with_stdout(
        cli_in_process, "fit", "--config", DIGITS, "--trainer.max_epochs=null", *given,
        "--model.init_args.hidden_sizes=[8]", "--trainer.limit_train_batches=2", "--trainer.enable_progress_bar=false",
    )  # fmt: skip
    assert code == 0, stderr[-2000:]
    assert seen == [expected]
    assert ("max_epochs=1000 (Lightning's default; -1 trains without limit)" in out) == (expected == 1000)


@pytest.mark.parametrize(
    "before,expected",
    [
        (["--trainer.max_epochs=1"], "--trainer.max_epochs is given before the subcommand 'fit', which takes it"),
        (["--config", "top.yaml"], "trainer.max_epochs comes from a --config given before the subcommand 'fit'"),
    ],
)
def test_what_only_the_subcommand_takes_given_before_it_is_said_so(before, expected, cli_in_process, tmp_path):
    (tmp_path / "top.yaml").write_text("trainer:\n  max_epochs: 1\n")
    code, stderr = cli_in_process(*before, "fit", "--config", DIGITS)
    assert code == 2 and stderr.strip().splitlines()[-1].startswith(f"error: {expected}"), stderr[-2000:]


def test_a_script_of_ones_own_ends_a_mistake_in_one_line_as_the_command_does(monkeypatch, capsys, tmp_path):
    from lightning_rect import SparseMLP
    from lightning_rect.app.cli import RectCLI
    from lightning_rect.data import DigitsDataModule

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["my_script.py", "fit", "--model.hidden_sizez=[8]"])  # its command line
    with pytest.raises(SystemExit) as exit_:
        RectCLI(SparseMLP, DigitsDataModule)
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("error: --model.hidden_sizez: no such option; did you mean")
    assert not (tmp_path / "lightning_logs").exists()


def test_a_model_and_data_of_ones_own_without_size_arguments_run_under_rectcli(monkeypatch, tmp_path):
    """The size links are made where the model takes them: a model of one's own may take neither."""
    import lightning as L
    import torch
    from torch import nn

    from lightning_rect.app.cli import RectCLI

    class Net(L.LightningModule):
        def __init__(self, hidden: int = 4):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, 2))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class Data(L.LightningDataModule):
        def train_dataloader(self):
            data = torch.utils.data.TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,)))
            return torch.utils.data.DataLoader(data, batch_size=4)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    cli = RectCLI(Net, Data, args=["fit", "--model.hidden=6", "--trainer.max_epochs=1", "--trainer.logger=false"])
    assert cli.trainer.global_step == 2 and cli.model.net[0].out_features == 6


def test_a_script_of_ones_owns_help_offers_only_what_it_has(monkeypatch, capsys):
    from lightning_rect import SparseMLP
    from lightning_rect.app.cli import RectCLI
    from lightning_rect.data import DigitsDataModule

    monkeypatch.setattr(sys, "argv", ["my_script.py", "--help"])
    with pytest.raises(SystemExit) as exit_:
        RectCLI(SparseMLP, DigitsDataModule)
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "{fit,validate,test,predict}" in out
    assert "reproduce" not in out and "configs DIR" not in out  # the command's parts, not the script's
