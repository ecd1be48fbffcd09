"""DDP through the CLI: 2 CPU processes (gloo) launched by ``python -m lightning_rect``.

The numbers of a 2-process run (each process sees half of every split) must equal those of one
process evaluating the same checkpoint on the whole split: error rates and the SparsityMonitor's
exact sparsity and dead units, for validation (read from metrics.csv at the selected epoch) and
test (results.json, written by rank 0 alone), and the test's firing-rate histograms
(firing_rates.json, written by rank 0 alone).
"""

import csv
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from lightning import Trainer

from lightning_rect import SparseMLP, StackedDAE
from lightning_rect.callbacks import SparsityMonitor
from lightning_rect.data import DigitsDataModule

DDP = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=2",
    "--trainer.strategy=ddp",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
#: One intra-op thread per process: two processes share the test machine's cores.
ENV = {"OMP_NUM_THREADS": "1"}


def single_process(stage: str, model, datamodule, monitor: SparsityMonitor | None = None) -> dict[str, float]:
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor or SparsityMonitor()],
    )
    run = trainer.validate if stage == "val" else trainer.test
    [metrics] = run(model, datamodule=datamodule, verbose=False)
    return metrics


def logged_row(metrics_csv: Path, epoch: int, key: str) -> dict[str, float]:
    """The metrics.csv row of ``epoch`` that holds ``key`` (CSVLogger writes one row per log call)."""
    with metrics_csv.open() as f:
        rows = [r for r in csv.DictReader(f) if r.get(key) not in (None, "") and int(r["epoch"]) == epoch]
    merged = {}
    for row in rows:
        merged.update({k: float(v) for k, v in row.items() if v not in (None, "")})
    return merged


@pytest.mark.slow
def test_two_cpu_processes_match_one_process_on_the_same_checkpoint(run_cli, tmp_path):
    proc = run_cli(
        "fit",
        "--config",
        str(ROOT / "configs" / "digits.yaml"),
        *DDP,
        "--trainer.max_epochs=2",
        "--model.init_args.hidden_sizes=[64,32]",
        env=ENV,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Rank 0 alone writes and prints the results.
    assert proc.stdout.count("results (SparseMLP on DigitsDataModule)") == 1, proc.stdout[-2000:]
    [results_file] = list((tmp_path / "runs" / "digits").glob("version_*/results.json"))
    results = json.loads(results_file.read_text())
    checkpoint = tmp_path / results["checkpoint"]

    model = SparseMLP.load_from_checkpoint(checkpoint, map_location="cpu")
    datamodule = DigitsDataModule()
    monitor = SparsityMonitor()
    test = single_process("test", model, datamodule, monitor)
    val = single_process("val", model, datamodule)

    assert {"test/err", "test/sparsity/layer_1", "test/sparsity/layer_2", "test/dead/mean"} <= set(test)
    for key, value in test.items():
        assert results[key] == pytest.approx(value, abs=1e-6), key

    assert results["best_val"] == pytest.approx(val["val/err"], abs=1e-6)
    logged = logged_row(results_file.parent / "metrics.csv", results["best_epoch"], "val/sparsity/layer_1")
    for key in ("val/sparsity/layer_1", "val/sparsity/layer_2", "val/sparsity/mean", "val/dead/mean", "val/err"):
        assert logged[key] == pytest.approx(val[key], abs=1e-6), key

    # Firing-rate histograms: rank 0 saved the test's (counts summed over both processes); one
    # process on the whole test split gives the same counts, histogram and dead units.
    saved = json.loads((results_file.parent / "firing_rates.json").read_text())["test"]["layers"]
    assert set(saved) == set(monitor.firing_rate_histograms["test"]) == {"layer_1", "layer_2"}
    for layer, histogram in monitor.firing_rate_histograms["test"].items():
        assert saved[layer]["histogram"] == list(histogram.counts), layer
        assert saved[layer]["dead"] == histogram.dead, layer
        assert saved[layer]["rows"] == 300, layer  # the whole test split, not one process's half
        rates = torch.tensor(saved[layer]["nonzero"], dtype=torch.float64) / saved[layer]["rows"]
        assert torch.equal(rates.float(), monitor.firing_rates["test"][layer]), layer
    assert (results_file.parent / "summary.png").is_file()  # rank 0 drew the figure once the results were in


@pytest.mark.slow
def test_greedy_pretraining_under_ddp_fixes_the_scale_from_every_ranks_data(run_cli, tmp_path):
    # scaled_sigmoid divides layer 1's outputs by their maximum over the training data of *all*
    # processes; each process sees half of it, so a scale from one rank alone would differ.
    pretrain_ddp = [
        a if a != "--trainer.strategy=ddp" else "--trainer.strategy=ddp_find_unused_parameters_true" for a in DDP
    ]
    proc = run_cli(
        "fit",
        "--config",
        str(ROOT / "configs" / "digits_pretrain.yaml"),
        *pretrain_ddp,
        "--trainer.max_epochs=2",
        "--model.init_args.epochs_per_layer=1",
        "--model.init_args.hidden_sizes=[32,16]",
        "--model.init_args.reconstruction=scaled_sigmoid",
        env=ENV,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("results (StackedDAE on DigitsDataModule)") == 1
    [results_file] = list((tmp_path / "runs" / "digits_pretrain").glob("version_*/results.json"))
    results = json.loads(results_file.read_text())
    dae = StackedDAE.load_from_checkpoint(tmp_path / results["checkpoint"], map_location="cpu")
    saved_scale = dae.encoder.layers[0].output_scale
    dae.encoder.layers[0].output_scale = 1.0  # layer 1 is frozen once layer 2 trains: same weights as then
    datamodule = DigitsDataModule()
    datamodule.setup("fit")
    x_train = datamodule.splits["train"][0]
    with torch.no_grad():
        global_max = dae.encoder(x_train, depth=1)[-1].max().item()
    assert saved_scale == pytest.approx(global_max, rel=1e-5)
    assert 0 < results["test/sparsity/layer_2"] < 1


@pytest.mark.slow
def test_plain_ddp_for_pretraining_names_the_strategy_to_use(run_cli):
    # one DDP process is enough: the model is wrapped in DistributedDataParallel all the same
    one_process = [a if a != "--trainer.devices=2" else "--trainer.devices=1" for a in DDP]
    proc = run_cli(
        "fit",
        "--config",
        str(ROOT / "configs" / "digits_pretrain.yaml"),
        *one_process,
        "--trainer.max_epochs=2",
        "--model.init_args.epochs_per_layer=1",
        "--model.init_args.hidden_sizes=[8,8]",
        env=ENV,
        timeout=240,
    )
    assert proc.returncode == 2
    assert "ddp_find_unused_parameters_true" in proc.stderr and "Traceback" not in proc.stderr


def child_processes(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the rank-1 process through /proc")
def test_sigterm_to_one_rank_stops_every_rank_soon_with_one_line(tmp_path):
    """Issue 32 item 5: SIGTERM to the rank-1 process left both processes idle for over 240 s (Lightning's
    notice broadcasts from inside the signal handler), then a 145-line gloo traceback. Now the ranks agree
    at the next check, all stop at the same batch, and rank 0 prints one line."""
    import signal
    import time

    from helpers.cli_process import start

    proc = start(
        tmp_path,
        "fit",
        "--config",
        str(ROOT / "configs" / "digits.yaml"),
        *DDP,
        "--trainer.max_epochs=100",
        "--trainer.limit_train_batches=200",
        "--model.init_args.hidden_sizes=[32]",
        "--data.init_args.batch_size=1",
        env=ENV,
    )
    last = tmp_path / "runs" / "digits" / "version_0" / "checkpoints" / "last.ckpt"
    try:
        deadline = time.time() + 240
        while not last.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None and last.exists(), "the run ended (or never got to epoch 1) before the signal"
        [rank_1] = child_processes(proc.pid)
        time.sleep(0.3)  # into epoch 1
        stopped_at = time.monotonic()
        os.kill(rank_1, signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        took = time.monotonic() - stopped_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, out[-3000:]
    assert took < 60 and not running(rank_1), took
    lines = [line for line in out.splitlines() if line.startswith("stopped by")]
    assert len(lines) == 1 and "Traceback" not in out, out[-3000:]
    assert (
        lines[0].startswith("stopped by SIGTERM at epoch ") and "resume with: python -m lightning_rect fit" in lines[0]
    )
    assert torch.load(last, weights_only=True)["epoch"] >= 0 and not (last.parent.parent / ".lock").exists()
