"""``reproduce`` trains with the in-place SGD step wherever the update is plain SGD on one process,
as an execution setting: the run's id and settings do not change, its probe trains with it."""

import copy

import pytest
import yaml
from conftest import ROOT

from lightning_rect.reproduce.fast_path import FUSED_SGD, fused_sgd_holds
from lightning_rect.reproduce.plan import RunSpec
from lightning_rect.reproduce.runner import Options, Runner

MNIST = yaml.safe_load((ROOT / "configs" / "mnist.yaml").read_text())
DAE = yaml.safe_load((ROOT / "configs" / "mnist_pretrain.yaml").read_text())


def with_(config: dict, section: str, **values) -> dict:
    config = copy.deepcopy(config)
    target = config["model"]["init_args"] if section == "model" else config.setdefault(section, {})
    target.update(values)
    return config


def test_the_paper_configs_are_plain_sgd_on_one_process():
    assert fused_sgd_holds(MNIST) and fused_sgd_holds(DAE)
    assert fused_sgd_holds(with_(MNIST, "trainer", precision="64-true"))  # what the probe trains in


@pytest.mark.parametrize(
    "section,values",
    [
        ("model", {"momentum": 0.9}),
        ("model", {"optimizer": "adam"}),
        ("model", {"fused_sgd": False}),  # the config's own choice stands
        ("trainer", {"gradient_clip_val": 1.0}),
        ("trainer", {"accumulate_grad_batches": 2}),
        ("trainer", {"precision": "bf16-mixed"}),
        ("trainer", {"devices": 2}),
        ("trainer", {"devices": "auto"}),
        ("trainer", {"strategy": "ddp"}),
    ],
)
def test_what_would_change_the_update_keeps_the_plain_step(section, values):
    assert not fused_sgd_holds(with_(MNIST, section, **values))


def test_a_model_without_the_setting_keeps_the_plain_step():
    config = copy.deepcopy(MNIST)
    config["model"] = {"class_path": "torch.nn.Linear", "init_args": {"in_features": 2, "out_features": 1}}
    assert not fused_sgd_holds(config)
    config["model"]["class_path"] = "no_such_module.Model"
    assert not fused_sgd_holds(config)


def spec(name: str, **settings) -> RunSpec:
    from lightning_rect.reproduce.plan import Cell

    return RunSpec(
        id=f"mnist-rectifier-{name}",
        config="mnist.yaml",
        settings=settings,
        cell=Cell("mnist", "rectifier"),
        lr=settings.get("model.init_args.lr"),
    )


@pytest.mark.parametrize("fused", [True, False])
def test_the_fit_command_takes_the_fast_path_unless_plain_sgd_is_asked_for(tmp_path, fused):
    runner = Runner(Options(out=tmp_path, configs_dir=ROOT / "configs", fused_sgd=fused))
    run = spec("plain-sgd", **{"model.init_args.lr": 0.03})
    command = runner.command(run)
    assert ("--model.init_args.fused_sgd=true" in command) is fused
    assert FUSED_SGD not in run.settings  # not part of what the run is (its id, its settings)
    momentum = spec("momentum", **{"model.init_args.momentum": 0.5})
    assert "--model.init_args.fused_sgd=true" not in runner.command(momentum)
