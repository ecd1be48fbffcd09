"""W&B sweeps generated from the plans, so that each experiment's grid is written down once.

``python -m lightning_rect reproduce <experiment> --sweep`` writes them; ``configs/sweeps/`` holds
the paper budget's, and tests/test_sweeps.py fails when a committed file and its plan differ.

A sweep holds the runs of one data set, phase and config file; the agent runs
``python -m lightning_rect fit --config configs/<config> --config callbacks/wandb.yaml --<key>=<value> ...``.
Its parameters are the CLI's keys: a setting that takes each of its values with every combination
of the others is a parameter of its own (the learning rate, the L1 coefficient); the settings that
change together (an activation and its checkpoint, or its ``a``) form one ``config`` parameter, a
YAML fragment that LightningCLI's ``--config`` reads like a file; a setting equal in every run is a
``value``.

W&B cannot give fine-tuning the best of several pre-training runs as ``reproduce`` does, so those
runs keep their checkpoints under names with their learning rate, and the sweep's header says
which one to copy where.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lightning_rect.reproduce.budgets import DATASETS
from lightning_rect.reproduce.plan import RunSpec, num

CHECKPOINTS = "runs/pretrained"
COMMAND_HEAD = ["${env}", "${interpreter}", "-m", "lightning_rect", "fit"]
#: Seeds drawn by the random sweeps: runs that draw the same settings are still different networks.
SEEDS = {"distribution": "int_uniform", "min": 0, "max": 1_000_000}
WIDTH = 100


@dataclass(frozen=True)
class Sweep:
    """One sweep file.

    Args:
        file: its name, e.g. ``mnist_table1.yaml``.
        name: the sweep's name in W&B.
        about: what it runs and how to read it; paragraphs separated by newlines (wrapped), lines
            starting with two spaces kept as they are.
        experiment, dataset: what ``reproduce <experiment> --sweep --datasets <dataset>`` writes it.
        runs: the plan's runs it covers.
        random_networks: None: a grid, one W&B run per plan run. A number: random search with that
            run cap, each run drawing its settings from the plan's values and a seed.
    """

    file: str
    name: str
    about: str
    experiment: str
    dataset: str
    runs: tuple[RunSpec, ...]
    random_networks: int | None = None


# -- checkpoints between the pre-training and fine-tuning sweeps --------------------------------------
def pretraining_checkpoints(plan: list[RunSpec]) -> dict[str, str]:
    """Run id -> where a pre-training sweep run keeps its best checkpoint:
    ``runs/pretrained/<dataset>_<activation>.ckpt``, with ``_lr<lr>`` when the plan tries several."""
    by_cell: dict[Any, list[RunSpec]] = {}
    for spec in plan:
        if spec.phase == "pretrain":
            by_cell.setdefault(spec.cell, []).append(spec)
    paths = {}
    for cell, specs in by_cell.items():
        for spec in specs:
            suffix = f"_lr{num(spec.lr)}" if len(specs) > 1 else ""
            paths[spec.id] = f"{CHECKPOINTS}/{cell.dataset}_{cell.activation}{suffix}.ckpt"
    return paths


def starting_checkpoint(spec: RunSpec, checkpoints: dict[str, str]) -> str:
    """The checkpoint a fine-tuning sweep run starts from: its pre-training run's, or, when the plan
    chooses among several, the name the chosen one is to be copied to."""
    if len(spec.needs) == 1:
        return checkpoints[spec.needs[0]]
    return f"{CHECKPOINTS}/{spec.dataset}_{spec.cell.activation}.ckpt"


def export_callback(path: str) -> dict[str, Any]:
    """A ModelCheckpoint keeping the best DAE (lowest val/recon) under a fixed name."""
    return {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {
            "monitor": "val/recon",
            "mode": "min",
            "dirpath": str(Path(path).parent),
            "filename": Path(path).stem,
            "enable_version_counter": False,
        },
    }


def sweep_settings(spec: RunSpec, checkpoints: dict[str, str]) -> dict[str, Any]:
    """The run's settings as a sweep gives them: plus the checkpoint it writes or starts from."""
    settings = dict(spec.settings)
    if spec.phase == "pretrain":
        settings["trainer.callbacks+"] = [export_callback(checkpoints[spec.id])]
    elif spec.needs:
        settings["model.init_args.pretrained"] = starting_checkpoint(spec, checkpoints)
    return settings


# -- the grid as W&B parameters ----------------------------------------------------------------------
def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _unique(values: list[Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for value in values:
        seen.setdefault(_canonical(value), value)
    return list(seen.values())


def fragment(settings: dict[str, Any]) -> str:
    """Dotted settings as one flow-style YAML mapping, e.g. ``{model: {init_args: {activation: tanh}}}``."""
    nested: dict[str, Any] = {}
    for dotted, value in settings.items():
        *parents, leaf = dotted.split(".")
        node = nested
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return yaml.safe_dump(nested, default_flow_style=True, sort_keys=False, width=10**6).strip()


def parameters(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """W&B parameters whose grid is exactly ``rows`` (a setting missing from a row is null there)."""
    keys = list(dict.fromkeys(key for row in rows for key in row))
    full = [{key: row.get(key) for key in keys} for row in rows]
    table = {tuple(_canonical(row[key]) for key in keys) for row in full}
    if len(table) != len(rows):
        raise ValueError("two runs of one sweep have the same settings")

    def column(key: str) -> list[Any]:
        return _unique([row[key] for row in full])

    def is_factor(key: str) -> bool:  # every value of key occurs with every combination of the others
        i = keys.index(key)
        rest = {t[:i] + t[i + 1 :] for t in table}
        return len(column(key)) * len(rest) == len(table)

    constant = [key for key in keys if len(column(key)) == 1]
    own = [key for key in keys if key not in constant and is_factor(key)]
    together = [key for key in keys if key not in constant and key not in own]
    params: dict[str, dict[str, Any]] = {}
    if together:
        params["config"] = {"values": _unique([fragment({key: row[key] for key in together}) for row in full])}
    for key in own:
        params[key] = {"values": column(key)}
    for key in constant:
        params[key] = {"value": full[0][key]}
    size = 1
    for spec in params.values():
        size *= len(spec.get("values", [None]))
    if size != len(rows):  # cannot happen when each `own` key is a factor; a guard for edits to this code
        raise AssertionError(f"the sweep's grid has {size} runs, its plan {len(rows)}")
    return params


# -- the file ----------------------------------------------------------------------------------------
class _Dumper(yaml.SafeDumper):
    """Block lists indented under their key, lists of numbers on one line, config fragments as
    folded scalars (wrapped here, one line again once YAML reads them)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str):
    style = ">" if value.startswith("{") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _represent_list(dumper: yaml.SafeDumper, value: list):
    numbers = all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=numbers)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(list, _represent_list)


def comment(text: str) -> list[str]:
    lines = []
    for paragraph in text.strip("\n").split("\n"):
        if paragraph.startswith("  ") or not paragraph:
            lines.append(paragraph)
        else:
            lines += textwrap.wrap(paragraph, WIDTH - 2, break_on_hyphens=False, break_long_words=False)
    return ["#" + (" " + line if line else "") for line in lines]


def footer(sweep: Sweep, has_fragments: bool) -> str:
    data = ""
    if DATASETS[sweep.dataset].uses_data_dir:
        data = (
            "The data are read from data.init_args.data_dir (default: data/, relative to the repository root); "
            "point it elsewhere with a parameter  data.init_args.data_dir: {value: /path/to/data}  "
            "(or --data-dir with the command below).\n"
        )
    fragments = (
        "; `config` is LightningCLI's --config, given a YAML fragment instead of a file name: it sets "
        "several keys together (ones that must change together), after the files"
    )
    return (
        data + "Run from the repository root, in the environment where lightning_rect is installed (the agent "
        "starts `/usr/bin/env python -m lightning_rect fit ...`). Each parameter reaches the command line as "
        f"--<name>=<value>{fragments if has_fragments else ''}.\n"
        + f"Written by the command below from the plan in lightning_rect/reproduce/experiments/{sweep.experiment}.py "
        "(paper budget): change the plan, not this file (tests/test_sweeps.py fails when the two differ).\n"
        + f"  python -m lightning_rect reproduce {sweep.experiment} --sweep --datasets {sweep.dataset}"
    )


def config_defaults(rows: list[dict[str, Any]], config_file: Path | None) -> list[dict[str, Any]]:
    """``rows`` where a setting that only some runs give is filled in, for the others, with the config
    file's value (e.g. l1 = 0 for tanh runs, the config's 0.001 for the rectifier's); a setting the
    config does not have stays missing (null in the sweep, e.g. ``pretrained``)."""
    config = yaml.safe_load(config_file.read_text()) or {} if config_file is not None and config_file.is_file() else {}
    keys = dict.fromkeys(key for row in rows for key in row)
    filled = []
    for row in rows:
        row = dict(row)
        for key in keys:
            node: Any = config
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if key not in row and node is not None and not isinstance(node, (dict, list)):
                row[key] = node
        filled.append(row)
    return filled


def render(sweep: Sweep, plan: list[RunSpec], data_dir: Path | None = None, configs_dir: Path | None = None) -> str:
    """The sweep file's text."""
    checkpoints = pretraining_checkpoints(plan)
    [config] = {spec.config for spec in sweep.runs}
    rows = [sweep_settings(spec, checkpoints) for spec in sweep.runs]
    params = parameters(config_defaults(rows, configs_dir / config if configs_dir is not None else None))
    if sweep.random_networks:
        params["seed_everything"] = dict(SEEDS)
    if data_dir is not None and DATASETS[sweep.dataset].uses_data_dir:
        params["data.init_args.data_dir"] = {"value": str(data_dir)}
    body: dict[str, Any] = {
        "name": sweep.name,
        "program": "lightning_rect/__main__.py",
        "method": "random" if sweep.random_networks else "grid",
    }
    if sweep.random_networks:
        body["run_cap"] = sweep.random_networks
    body["metric"] = {"name": "best_val", "goal": "minimize"}
    body["command"] = [*COMMAND_HEAD, "--config", f"configs/{config}", "--config", "callbacks/wandb.yaml", "${args}"]
    body["parameters"] = params
    header = (
        sweep.about.strip("\n") + f"\n  wandb sweep configs/sweeps/{sweep.file}   # then: wandb agent <sweep id>\n"
        "The metric, best_val, is results.json's best validation score (val/err, or val/recon for "
        "pre-training), in the run summary; `program` is what W&B records, the command is what runs.\n"
        + footer(sweep, "config" in params)
    )
    text = yaml.dump(body, Dumper=_Dumper, sort_keys=False, width=WIDTH, allow_unicode=True)
    return "\n".join(comment(header)) + "\n" + text


def write_sweeps(
    sweeps: list[Sweep],
    plan: list[RunSpec],
    folder: Path,
    data_dir: Path | None = None,
    configs_dir: Path | None = None,
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for sweep in sweeps:
        path = folder / sweep.file
        path.write_text(render(sweep, plan, data_dir, configs_dir))
        paths.append(path)
    return paths
