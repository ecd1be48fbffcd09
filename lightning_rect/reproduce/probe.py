"""A short seeded probe of a run's own config: what decides whether a finished run may be reused.

A run is worth reusing only while the code would still train it the same way. The package version
cannot say that (a change to the loss or the noise keeps it), and a hash of the code says too much
(a rename changes it). So ``inputs.json`` records what the code *does* with the run's config: the
model and data module are built from the effective config (the config file with the run's settings),
seeded as ``fit`` seeds them, and trained for a few steps of ``BATCH_SIZE`` examples on a seeded
subset of the run's own data, with every layer of a ``StackedDAE`` getting its share; the per-step
training losses and the size of each parameter's change are kept. A change to the initialisation,
the forward pass, the loss, the optimizer step, the data order or the preprocessing moves these
numbers; a refactor leaves them where they were.

Training is not bit-identical across processors (the order of float additions differs), so probes
are compared within a tolerance (``RTOL``). In float32 a StackedDAE's top layer amplifies those
differences past any useful tolerance within a few steps (one against two threads: 6e-4 at step 14
of the rectifier's paper-budget DAE), so the probe trains in float64 (``PRECISION``, unless the
config sets a precision of its own), where they stay below 1e-9 while real changes move the numbers
by 1e-2 and more. The probe runs on one thread, whatever the caller's setting.

The probe starts from random weights: a fine-tuning run's pre-trained start is covered by its
pre-training run's own probe (a fine-tuning run trains again whenever its pre-training does).
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Training steps of a probe (a StackedDAE: this many per layer).
STEPS = 6
#: Examples per probe step, and the share of the training set the probe keeps (the data module's
#: own seeded, class-balanced ``labeled_fraction`` subset, or the run's, if smaller): the passes a
#: StackedDAE makes over the whole training set between layers then take a few batches.
BATCH_SIZE = 50
TRAIN_FRACTION = 0.02
#: Relative tolerance between a recorded probe and the current one.
RTOL = 1e-4
#: The probe's precision where the config sets none (recorded with the probe: one recorded in another
#: precision is not comparable, and the run is not reused).
PRECISION = "64-true"
#: Trainer settings that change what a step computes; every other one (epochs, loggers, callbacks,
#: devices) is left to the probe's own.
NUMERIC_TRAINER_KEYS = ("gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches", "precision")


def effective_config(config: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The parsed config with the run's dotted settings set (appending ones, ``key+``, left out:
    they add callbacks, which do not change what a step computes)."""
    import copy

    config = copy.deepcopy(config)
    for key, value in settings.items():
        if key.endswith("+"):
            continue
        node = config
        *parents, last = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    return config


def run_probe(config: dict[str, Any], data_dir: Path | None = None, threads: int = 1) -> dict[str, Any]:
    """Train the effective ``config`` for a few steps from its seed; returns the probe's numbers.

    ``threads`` is there to check that another float order (another processor's) stays within
    ``RTOL``; a recorded probe is always taken with one."""
    import lightning as L
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule, LightningModule

    from lightning_rect.app.cli import link_data_sizes

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningModule, "model", required=True)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    link_data_sizes(parser)  # type: ignore[arg-type]  # typed for LightningCLI's parser; jsonargparse's links too
    sections = {"model": config["model"], "data": config["data"]}
    data_args = {**(sections["data"].get("init_args") or {}), "batch_size": BATCH_SIZE}
    data_args["labeled_fraction"] = min(TRAIN_FRACTION, data_args.get("labeled_fraction", 1.0))
    if data_dir is not None:
        data_args["data_dir"] = str(data_dir)
    sections["data"] = {**sections["data"], "init_args": data_args}
    layers = None
    if "epochs_per_layer" in (sections["model"].get("init_args") or {}):  # a StackedDAE: every layer trains
        sections["model"] = {
            **sections["model"],
            "init_args": {**sections["model"]["init_args"], "epochs_per_layer": 1},
        }
        layers = len(sections["model"]["init_args"].get("hidden_sizes") or [0])
    seed = config.get("seed_everything", 0)
    with _threads_and_quiet_lightning(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        L.seed_everything(seed if isinstance(seed, int) and not isinstance(seed, bool) else 0, verbose=False)
        parsed = parser.parse_object(sections)
        built = parser.instantiate_classes(parsed)
        model, data = built.model, built.data
        start = {name: p.detach().clone() for name, p in model.named_parameters()}
        losses: list[float] = []

        class Losses(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                loss = outputs["loss"] if isinstance(outputs, dict) else outputs
                losses.append(float(loss))

        trainer_args = {k: v for k, v in (config.get("trainer") or {}).items() if k in NUMERIC_TRAINER_KEYS}
        if trainer_args.get("precision") is None:
            trainer_args["precision"] = PRECISION
        trainer = L.Trainer(
            max_epochs=layers or 1,
            limit_train_batches=STEPS,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
            devices=1,
            callbacks=[Losses()],
            **trainer_args,
        )
        trainer.fit(model, datamodule=data)
    change = {
        name: float((p.detach() - start[name]).double().norm()) for name, p in model.named_parameters() if name in start
    }
    return {
        "precision": str(trainer_args["precision"]),
        "steps": len(losses),
        "losses": [round(v, 9) for v in losses],
        "change": {name: round(v, 9) for name, v in sorted(change.items())},
    }


@contextlib.contextmanager
def _threads_and_quiet_lightning(threads: int) -> Iterator[None]:
    """For the block: torch's thread count set to ``threads`` (a recorded probe takes one, whatever the
    caller runs with, so it repeats exactly on its own machine), and Lightning's "GPU available"
    banner and tips silenced (once per probe: not the user's fit); both restored after it."""
    import torch

    torch_threads = torch.get_num_threads()
    lightning_info = logging.getLogger("lightning.pytorch")
    lightning_level = lightning_info.level
    torch.set_num_threads(threads)
    lightning_info.setLevel(logging.WARNING)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        lightning_info.setLevel(lightning_level)


def probe_differences(recorded: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """What differs between two probes beyond ``RTOL``, in words (empty: the same training)."""
    if not isinstance(recorded, dict):
        return ["no probe recorded"]
    if recorded.get("precision", "32-true") != current.get("precision", "32-true"):
        return [
            f"its probe was recorded in precision {recorded.get('precision', '32-true')}, this version "
            f"probes in {current.get('precision')}"
        ]
    old_losses, new_losses = recorded.get("losses"), current["losses"]  # run_probe's result holds its losses
    if not isinstance(old_losses, list) or len(old_losses) != len(new_losses):
        return [f"probe ran {len(old_losses) if isinstance(old_losses, list) else '?'} steps, now {len(new_losses)}"]
    for step, (old, new) in enumerate(zip(old_losses, new_losses)):
        if not _close(old, new):
            return [
                f"training loss at probe step {step} was {old:.6g}, now {new:.6g} (initialisation, forward, "
                "loss, optimizer step, data order or preprocessing changed)"
            ]
    old_change, new_change = recorded.get("change") or {}, current.get("change") or {}
    if set(old_change) != set(new_change):
        return [
            "the model's parameters are not the ones the run had: "
            + ", ".join(sorted(set(old_change) ^ set(new_change))[:4])
        ]
    for name in sorted(new_change):
        if not _close(old_change[name], new_change[name]):
            return [
                f"the update of {name} over the probe was {old_change[name]:.6g}, now {new_change[name]:.6g} "
                "(optimizer step or gradient changed)"
            ]
    return []


def _close(old: Any, new: float) -> bool:
    if not isinstance(old, (int, float)):
        return False
    if math.isnan(old) or math.isnan(new):
        return math.isnan(old) and math.isnan(new)
    return math.isclose(old, new, rel_tol=RTOL, abs_tol=1e-9)
