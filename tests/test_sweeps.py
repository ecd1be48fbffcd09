"""The W&B sweeps in configs/sweeps/ are what ``reproduce <experiment> --sweep`` writes from the
plans (paper budget), and each holds exactly its plan's runs; every sweep expands, as the W&B agent
would, into command lines that LightningCLI parses and instantiates (no training); fine-tuning runs
start from checkpoints that the pre-training sweeps produce, for the same activation and layer sizes."""

import itertools
import json
import math
import random
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import ROOT

from lightning_rect import StackedDAE
from lightning_rect.app.cli import RectCLI
from lightning_rect.reproduce import main as reproduce
from lightning_rect.reproduce.budgets import BUDGETS, DATASETS
from lightning_rect.reproduce.experiments import EXPERIMENTS, Context
from lightning_rect.reproduce.sweeps import config_defaults

SWEEPS = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))
#: Keys of a W&B sweep configuration and of one of its parameters (W&B's sweep spec).
SWEEP_KEYS = {
    "program",
    "method",
    "metric",
    "parameters",
    "command",
    "name",
    "description",
    "project",
    "entity",
    "early_terminate",
    "run_cap",
}
PARAM_KEYS = {"value", "values", "probabilities", "distribution", "min", "max", "mu", "sigma", "q"}
COMMAND_HEAD = ["${env}", "${interpreter}", "-m", "lightning_rect", "fit"]
RANDOM_SAMPLES = 4
#: The sweeps committed to configs/sweeps/: experiment -> data sets.
COMMITTED = {"table1": list(DATASETS), "l1_sweep": ["mnist"], "sharpness": ["norb"], "semi_supervised": ["norb"]}


def expand(sweep: dict, rng: random.Random) -> list[dict[str, Any]]:
    """Parameter sets the agent would run: grid = the product of every parameter's ``values``;
    random = draws from each distribution (here: every listed value at least once, plus draws)."""
    params = sweep["parameters"]
    if sweep["method"] == "grid":
        names = list(params)
        choices = []
        for name in names:
            spec = params[name]
            assert "value" in spec or "values" in spec, f"grid parameter {name} needs value or values, got {spec}"
            choices.append([spec["value"]] if "value" in spec else spec["values"])
        return [dict(zip(names, combo)) for combo in itertools.product(*choices)]
    assert sweep["method"] in ("random", "bayes"), sweep["method"]
    listed = max([len(spec["values"]) for spec in params.values() if "values" in spec] + [RANDOM_SAMPLES])
    return [{name: draw(spec, i, rng) for name, spec in params.items()} for i in range(listed)]


def draw(spec: dict, i: int, rng: random.Random) -> Any:
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return spec["values"][i % len(spec["values"])]
    kind, low, high = spec.get("distribution"), spec.get("min"), spec.get("max")
    if kind == "int_uniform":
        return rng.randint(low, high)
    if kind == "uniform":
        return rng.uniform(low, high)
    if kind == "log_uniform_values":
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    if kind == "log_uniform":  # min and max are natural-log exponents
        return math.exp(rng.uniform(low, high))
    raise AssertionError(f"distribution {kind!r} not handled by this test; add it")


def agent_args(params: dict[str, Any]) -> list[str]:
    """``${args}``: the agent writes ``--{name}={value}`` with Python's str() of the value."""
    return [f"--{name}={value}" for name, value in params.items()]


def command_args(sweep: dict, params: dict[str, Any]) -> list[str]:
    """The command's arguments after ``fit``, config files made absolute (the agent runs at the root)."""
    command = sweep["command"]
    assert command[: len(COMMAND_HEAD)] == COMMAND_HEAD and command[-1] == "${args}", command
    args, fixed = [], command[len(COMMAND_HEAD) : -1]
    for previous, token in zip([None, *fixed], fixed):
        if previous == "--config":
            assert (ROOT / token).is_file(), f"command names {token}, which does not exist"
            token = str(ROOT / token)
        args.append(token)
    return args + agent_args(params)


class ParseOnly(RectCLI):
    """RectCLI that builds its parser and parses, but instantiates nothing."""

    def instantiate_classes(self) -> None:
        pass


def instantiate(parser, config):
    """Model, data, callbacks and loggers of a parsed config (links applied), as the CLI builds them.

    On the meta device: every constructor runs its checks, but weights are neither allocated nor
    initialised, which keeps 4000-unit NORB layers cheap.
    """
    build = parser.instantiate if hasattr(parser, "instantiate") else parser.instantiate_classes
    with torch.device("meta"):
        return build(config)


def build_runs(sweep_file: Path, parser) -> list[tuple[list[str], Any, Any]]:
    """(command-line args, parsed config, instantiated config) for every run the sweep expands to."""
    sweep = yaml.safe_load(sweep_file.read_text())
    assert set(sweep) <= SWEEP_KEYS, f"{sweep_file.name}: unknown keys {set(sweep) - SWEEP_KEYS}"
    for name, spec in sweep["parameters"].items():
        assert set(spec) <= PARAM_KEYS, f"{sweep_file.name}: parameter {name} has unknown keys {set(spec) - PARAM_KEYS}"
    runs = []
    for params in expand(sweep, random.Random(0)):
        args = command_args(sweep, params)
        config = parser.parse_args(args)  # what RectCLI does with them; exits with the error if invalid
        buildable = config.clone()
        if buildable.get("model.init_args.pretrained"):  # checked against the pre-training sweeps below
            buildable["model.init_args.pretrained"] = None
        runs.append((args, config, instantiate(parser, buildable)))
    return runs


@pytest.fixture(scope="module")
def all_runs(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("sweeps"))  # anything written lands here
        patch.setenv("WANDB_MODE", "disabled")
        patch.setattr(sys, "argv", ["lightning_rect"])  # LightningCLI warns about pytest's own argv
        parser = ParseOnly(args=["--config", str(ROOT / "configs" / "digits.yaml")], run=False).parser
        yield {path.name: build_runs(path, parser) for path in SWEEPS}


def test_committed_sweeps_are_what_the_plans_write(tmp_path, capsys):
    for experiment, datasets in COMMITTED.items():
        reproduce([experiment, "--sweep", "--datasets", *datasets, "--out", str(tmp_path)])
    capsys.readouterr()
    written = {path.name: path.read_text() for path in tmp_path.glob("*.yaml")}
    committed = {path.name: path.read_text() for path in SWEEPS}
    assert sorted(written) == sorted(committed)  # none missing, none left over
    for name, text in written.items():
        assert committed[name] == text, (
            f"configs/sweeps/{name} differs from its plan; regenerate it with the command in its header"
        )


def flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested or dotted settings as leaf keys (``model.init_args.activation_args.a``); null is the
    config's default, as a setting the plan leaves out."""
    leaves = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            leaves.update(flat(value, f"{prefix}{key}."))
        elif value is not None:
            leaves[f"{prefix}{key}"] = value
    return leaves


def grid_of(sweep: dict) -> list[dict[str, Any]]:
    """Every combination of the sweep's listed values as flat settings (drawn seeds left out), with
    checkpoints reduced to what the plan says: starts from pre-training or not."""
    listed = {
        name: [spec["value"]] if "value" in spec else spec["values"]
        for name, spec in sweep["parameters"].items()
        if "value" in spec or "values" in spec
    }
    rows = []
    for combo in itertools.product(*listed.values()):
        row = {}
        for name, value in zip(listed, combo):
            row.update(flat(yaml.safe_load(value)) if name == "config" else {name: value})
        if "model.init_args.reconstruction" in row:
            row.pop("trainer.callbacks+", None)  # where a pre-training run keeps its checkpoint
        if "model.init_args.lr" in row and "model.init_args.reconstruction" not in row:  # fine-tuning
            row["pretrained"] = row.pop("model.init_args.pretrained", None) is not None
        rows.append(row)
    return rows


def test_each_sweep_holds_exactly_its_plans_runs():
    for experiment_name, datasets in COMMITTED.items():
        experiment = EXPERIMENTS[experiment_name]
        plan = experiment.plan(Context(BUDGETS["paper"], ROOT / "configs"), datasets)
        sweeps = experiment.sweeps(plan, datasets)
        # a variant kept for the report (Table 1's former protocol) is not swept
        assert sorted(s.id for sweep in sweeps for s in sweep.runs) == sorted(
            s.id for s in plan if s.cell.variant is None
        )
        for sweep in sweeps:
            # a setting only some runs give (l1 = 0 for tanh) is the config's value in the others
            expected = config_defaults(
                [
                    {**flat(s.settings), **({"pretrained": bool(s.needs)} if s.phase == "finetune" else {})}
                    for s in sweep.runs
                ],
                ROOT / "configs" / sweep.runs[0].config,
            )
            found = grid_of(yaml.safe_load((ROOT / "configs" / "sweeps" / sweep.file).read_text()))
            canonical = sorted(json.dumps(row, sort_keys=True) for row in expected)
            assert sorted(json.dumps(row, sort_keys=True) for row in found) == canonical, sweep.file
            assert len(found) == len(sweep.runs) > 1


def test_sweep_files_exist_for_the_papers_experiments():
    names = {path.name for path in SWEEPS}
    for data in ("digits", "mnist"):
        assert {f"{data}_pretrain.yaml", f"{data}_table1.yaml"} <= names
    assert {"mnist_l1.yaml", "norb_sharpness.yaml"} <= names


@pytest.mark.slow  # builds every run of every sweep (~20 s)
def test_every_expanded_command_line_parses_and_instantiates(all_runs):
    for name, runs in all_runs.items():
        assert runs, f"{name} expands to no run"
        for args, config, init in runs:
            assert config["trainer.logger"], args
            loggers = init.trainer.logger if isinstance(init.trainer.logger, list) else [init.trainer.logger]
            assert any(type(logger).__name__ == "WandbLogger" for logger in loggers), f"{name}: no W&B logger"
            assert init.model.hparams.in_features == init.data.input_size


@pytest.mark.slow  # builds every run of every sweep (~20 s)
def test_table1_grid_is_activation_by_pretraining_by_lr(all_runs):
    for data in ("digits", "mnist", "cifar10", "nistp", "norb"):
        cells = {
            (c["model.init_args.activation"], c["model.init_args.pretrained"] is not None, c["model.init_args.lr"])
            for _, c, _ in all_runs[f"{data}_table1.yaml"]
        }
        # the paper's grid, except where the paper budget narrows it (MNIST: reproductions/table1/grid)
        lrs = BUDGETS["paper"].phase_lrs.get(data, {}).get("finetune", (0.1, 0.01, 0.001, 0.0001))
        assert cells == set(itertools.product(("rectifier", "tanh", "softplus"), (False, True), lrs)), data


@pytest.mark.slow  # builds every run of every sweep (~20 s)
def test_pretrained_checkpoints_come_from_the_pretraining_sweeps(all_runs):
    produced = {}  # checkpoint path -> (activation, layer sizes) of the pre-training run writing it
    for name, runs in all_runs.items():
        for _, config, init in runs:
            if not isinstance(init.model, StackedDAE):
                continue
            # The CLI tests and hands on the checkpoint of the callback monitoring the selection metric.
            [export] = [
                cb.init_args
                for cb in config["trainer.callbacks"]
                if cb.class_path.endswith("ModelCheckpoint") and cb.init_args.monitor == StackedDAE.selection_metric
            ]
            assert export.filename and export.enable_version_counter is False, f"{name}: checkpoint name must be fixed"
            path = str(Path(export.dirpath) / f"{export.filename}.ckpt")
            produced[path] = (
                init.model.hparams.activation,
                init.model.hparams.in_features,
                list(init.model.hparams.hidden_sizes),
            )

    # 5 data sets x 3 activations x their learning rates (4, MNIST's narrowed 1), all different files
    # (the semi-supervised sweep's pre-training writes norb's rectifier and tanh ones again: the same runs)
    def lrs(data: str, phase: str) -> int:
        return len(BUDGETS["paper"].phase_lrs.get(data, {}).get(phase, (0.1, 0.01, 0.001, 0.0001)))

    datasets = ("digits", "mnist", "cifar10", "nistp", "norb")
    assert len(produced) == sum(3 * lrs(data, "pretrain") for data in datasets)
    used = 0
    for name, runs in all_runs.items():
        for _, config, init in runs:
            path = config.get("model.init_args.pretrained")
            if path:
                used += 1
                # the best of the pre-training runs at each learning rate is copied to this name; a
                # single rate writes it directly
                data = Path(path).name.split("_")[0]
                several = lrs(data, "pretrain") > 1
                candidates = [
                    p for p in produced if (p.startswith(path.removesuffix(".ckpt") + "_lr") if several else p == path)
                ]
                assert len(candidates) == lrs(data, "pretrain"), (
                    f"{name}: no pre-training sweep writes {path} at each rate"
                )
                wanted = (
                    init.model.hparams.activation,
                    init.model.hparams.in_features,
                    list(init.model.hparams.hidden_sizes),
                )
                for candidate in candidates:
                    assert produced[candidate] == wanted, (
                        f"{name}: {candidate} was pre-trained as {produced[candidate]}, used as {wanted}"
                    )
    # Table 1's, then semi-supervised NORB (2 activations x 5 fractions x 4 rates)
    assert used == sum(3 * lrs(data, "finetune") for data in datasets) + 2 * 5 * 4


@pytest.mark.slow  # builds every run of every sweep (~20 s)
def test_l1_sweep_covers_zero_to_a_hundredth_with_random_seeds(all_runs):
    runs = all_runs["mnist_l1.yaml"]
    l1 = sorted({c["model.init_args.l1"] for _, c, _ in runs})
    assert l1[0] == 0.0 and l1[-1] == 0.01 and all(isinstance(v, float) for v in l1)
    assert len({c["seed_everything"] for _, c, _ in runs}) > 1
    assert {c["model.init_args.activation"] for _, c, _ in runs} == {"rectifier"}


@pytest.mark.slow  # builds every run of every sweep (~20 s)
def test_sharpness_sweep_builds_each_sharp_softplus_and_the_rectifier(all_runs):
    built = set()
    for _, _, init in all_runs["norb_sharpness.yaml"]:
        activation = init.model.encoder.activation_modules()[0]
        built.add(getattr(activation, "a", "rectifier"))
    assert built == {1.0, 1.3, 2.0, 3.0, 6.0, "rectifier"}
