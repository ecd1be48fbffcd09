"""Figures of runs (lightning_rect.app.plots): drawn from small hand-written run folders (metrics.csv,
results.json, config.yaml, firing_rates.json written here), except the session's finished digits fit
(conftest.finished_run) and one fit without matplotlib."""

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT

from lightning_rect.app.plots import draw_summary, load_run, run_labels, write_summary_figure
from lightning_rect.app.plots.run_folder import Run, RunFolderError, resolve_run_folder
from lightning_rect.callbacks.sparsity import firing_rate_histogram, save_firing_rates

#: The documented size of summary.png (and of an overlay), width x height in pixels.
WIDTH, HEIGHT = 1200, 800

#: layer_1 (6 units, 10 examples): 2 dead, then rates 0.1, 0.5, 1.0, 0.3; layer_2 (4 units): none dead
NONZERO = {"layer_1": [0, 0, 1, 5, 10, 3], "layer_2": [2, 9, 10, 4]}


def write_metrics(path: Path, rows: list[dict]) -> None:
    """As Lightning's CSVLogger writes it: every column in the header, empty cells elsewhere."""
    columns = ["epoch", "step", *sorted({k for row in rows for k in row} - {"epoch", "step"})]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_rates(folder: Path, stage: str = "test", nonzero: dict | None = None) -> None:
    counts = {layer: (torch.tensor(v, dtype=torch.float64), 10.0) for layer, v in (nonzero or NONZERO).items()}
    histograms = {layer: firing_rate_histogram(n, rows) for layer, (n, rows) in counts.items()}
    save_firing_rates(folder / "firing_rates.json", stage, histograms, counts, epoch=2, global_step=30)


def write_config(folder: Path, l1: float, version: int = 0, **model) -> None:
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 3,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": "runs", "name": "digits", "version": version},
            },
        },
        "model": {
            "class_path": "lightning_rect.SparseMLP",
            "init_args": {"hidden_sizes": [6, 4], "l1": l1, "lr": 0.03, **model},
        },
        "data": {"class_path": "lightning_rect.data.DigitsDataModule", "init_args": {"batch_size": 10}},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))


def write_mlp_run(folder: Path, l1: float = 0.001, version: int = 0, rates: bool = True) -> Path:
    """A SparseMLP run of 3 epochs (0-2), epoch 1 selected, then the test row."""
    folder.mkdir(parents=True)
    rows = []
    for epoch in range(3):
        step = 10 * (epoch + 1) - 1
        sparsity = {f"val/sparsity/layer_{k}": 0.5 + 0.1 * epoch + 0.05 * k + l1 for k in (1, 2)}
        rows.append(
            {
                "epoch": epoch,
                "step": step,
                "val/loss": 1.0 / (epoch + 1),
                "val/err": 0.3 - 0.05 * epoch,
                **sparsity,
                "val/sparsity/mean": sum(sparsity.values()) / 2,
                "val/dead/layer_1": 0.1 * epoch,
                "val/dead/layer_2": 0.0,
                "val/dead/mean": 0.05 * epoch,
            }
        )
        rows.append(
            {
                "epoch": epoch,
                "step": step,
                "train/loss": 1.5 / (epoch + 1),
                "train/sparsity/layer_1": 0.5,
                "train/sparsity/layer_2": 0.6,
                "train/sparsity/mean": 0.55,
            }
        )
    rows.append({"epoch": 3, "step": 30, "test/err": 0.25, "test/sparsity/mean": 0.7})
    write_metrics(folder / "metrics.csv", rows)
    results = {
        "model": "SparseMLP",
        "data": "DigitsDataModule",
        "selection_metric": "val/err",
        "best_val": 0.25,
        "best_epoch": 1,
        "epochs": 3,
        "fit_seconds": 1.0,
        "checkpoint": None,
        "test/err": 0.25,
        "test/sparsity/mean": 0.7,
    }
    (folder / "results.json").write_text(json.dumps(results))
    write_config(folder, l1, version)
    if rates:
        write_rates(folder)
    return folder


def write_dae_run(folder: Path) -> Path:
    """A StackedDAE run: layer 1 in epochs 0-1, layer 2 in epochs 2-3; selected epoch 3."""
    folder.mkdir(parents=True)
    rows = []
    for epoch in range(4):
        k = 1 + epoch // 2
        rows.append(
            {
                "epoch": epoch,
                "step": epoch,
                f"val/pretrain/layer_{k}/recon": 5.0 - epoch,
                "val/recon": "inf" if k == 1 else 5.0 - epoch,
                "val/sparsity/layer_1": 0.4,
                **({"val/sparsity/layer_2": 0.6} if k == 2 else {}),
                "val/dead/layer_1": 0.0,
            }
        )
        rows.append({"epoch": epoch, "step": epoch, f"train/pretrain/layer_{k}/recon": 6.0 - epoch})
    write_metrics(folder / "metrics.csv", rows)
    (folder / "results.json").write_text(
        json.dumps(
            {
                "model": "StackedDAE",
                "data": "DigitsDataModule",
                "selection_metric": "val/recon",
                "best_epoch": 3,
                "epochs": 4,
                "test/recon": 2.0,
            }
        )
    )
    write_rates(folder, stage="val")
    # its test runs layer 1 once per evaluated layer: the figure shows the validation epoch instead
    write_rates(folder, stage="test", nonzero={"layer_1@1": [1, 2], "layer_1@2": [3, 4], "layer_2": [5, 6]})
    return folder


def pixels(figure) -> tuple[int, int]:
    width, height = figure.get_size_inches() * figure.dpi
    return round(width), round(height)


def texts_of(figure) -> dict[str, list[str]]:
    """Every axes title, axis label, legend entry and text of a figure."""
    found = {"titles": [], "labels": [], "legend": [], "text": []}
    for ax in figure.get_axes():
        found["titles"].append(ax.get_title())
        found["labels"] += [ax.get_xlabel(), ax.get_ylabel()]
        if ax.get_legend() is not None:
            found["legend"] += [t.get_text() for t in ax.get_legend().get_texts()]
        found["text"] += [t.get_text() for t in ax.texts]
    return found


def test_summary_of_a_hand_written_run_has_every_panel_and_the_documented_size(tmp_path):
    from matplotlib.image import imread

    from lightning_rect.app.plots import save_summary

    folder = write_mlp_run(tmp_path / "run")
    figure = draw_summary(folder)
    assert pixels(figure) == (WIDTH, HEIGHT)
    found = texts_of(figure)
    assert {"Learning curves", "Exact sparsity per layer (validation)", "Dead units per layer (validation)"} <= set(
        found["titles"]
    )
    assert {"training loss", "validation loss", "validation error", "selected epoch 1", "layer_1", "layer_2"} <= set(
        found["legend"]
    )
    assert {
        "epoch (from 0)",
        "loss (NLL + L1, nats per example)",
        "validation error (%)",
        "units (log scale)",
        "firing rate (fraction of examples, output ≠ 0)",
    } <= set(found["labels"])
    assert "test error 25.00%" in figure.get_suptitle() and "selected epoch 1 of 0-2" in figure.get_suptitle()
    # layer_1's histogram: the 2 dead units in red left of 0, the others in their bins (log-scaled counts)
    [layer_1] = [ax for ax in figure.get_axes() if ax.get_title().startswith("layer_1")]
    assert layer_1.get_title() == "layer_1: 6 units, mean rate 0.317" and layer_1.get_yscale() == "log"
    firing, dead = layer_1.containers
    assert [bar.get_height() for bar in dead] == [2] and dead[0].get_x() < 0
    heights = [bar.get_height() for bar in firing]
    assert heights[0] == 0 and heights[2] == heights[6] == heights[10] == heights[19] == 1 and sum(heights) == 4
    assert "dead: 2 of 6 (33.3%)" in found["legend"]
    # the selected epoch is marked in each curve panel
    for title in ("Learning curves", "Exact sparsity per layer (validation)", "Dead units per layer (validation)"):
        [ax] = [a for a in figure.get_axes() if a.get_title() == title]
        assert any(list(line.get_xdata()) == [1, 1] for line in ax.get_lines()), title
    path = save_summary(folder)
    assert path == folder / "summary.png"
    assert imread(path).shape[:2] == (HEIGHT, WIDTH)


def test_stacked_dae_summary_shows_each_layers_reconstruction_across_its_phases(tmp_path):
    figure = draw_summary(write_dae_run(tmp_path / "dae"))
    found = texts_of(figure)
    assert "Greedy pre-training: reconstruction error per layer" in found["titles"]
    assert {
        "layer 1, training",
        "layer 1, validation",
        "layer 2, training",
        "layer 2, validation",
        "selected epoch 3",
    } <= set(found["legend"])
    assert {"phase 1:\ntrains layer 1", "phase 2:\ntrains layer 2"} <= set(found["text"])
    assert "Firing rates per layer: the validation set at epoch 2" in [s.get_suptitle() for s in figure.subfigs]
    assert pixels(figure) == (WIDTH, HEIGHT)


def test_a_run_without_rates_file_still_draws_and_says_what_is_missing(tmp_path):
    figure = draw_summary(write_mlp_run(tmp_path / "old", rates=False))
    assert any("no firing_rates.json" in t for t in texts_of(figure)["text"])


def test_plot_command_overlays_two_runs_in_one_figure_named_by_the_differing_setting(tmp_path, monkeypatch, capsys):
    from matplotlib.image import imread

    import lightning_rect.app.plots.command as command
    from lightning_rect.__main__ import main

    a = write_mlp_run(tmp_path / "runs" / "digits" / "version_0", l1=0.0, version=0)
    b = write_mlp_run(tmp_path / "runs" / "digits" / "version_1", l1=0.001, version=1)
    drawn, save_comparison = [], command.save_comparison

    def recording(*args, **kwargs):  # the command's own function, keeping what it drew
        drawn.append(save_comparison(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(command, "save_comparison", recording)
    out = tmp_path / "l1.png"
    monkeypatch.setattr(sys, "argv", ["lightning-rect", "plot", str(a), str(b), "-o", str(out)])
    main()
    [(path, comparison)] = drawn
    assert path == out and imread(out).shape[:2] == (HEIGHT, WIDTH)
    # the logger's version differs too, but says nothing about training: only l1 names the runs
    assert comparison.labels == ["l1=0.0", "l1=0.001"]
    [legend] = [ax.get_legend() for ax in comparison.figure.get_axes() if ax.get_legend() is not None]
    assert [t.get_text() for t in legend.get_texts()] == ["l1=0.0", "l1=0.001"]
    assert legend.get_title().get_text() == "runs (what differs in config.yaml)"
    assert capsys.readouterr().out.splitlines() == ["runs: l1=0.0; l1=0.001", f"wrote {out}"]


def run_with(folder: str, config: dict | None) -> Run:
    return Run(folder=Path(folder), config=config)


def test_legend_labels_name_every_differing_setting_and_fall_back_to_folders():
    base = {
        "model": {"init_args": {"l1": 0.0, "hidden_sizes": [64], "lr": 0.1}},
        "optimizer": None,
        "trainer": {"logger": {"init_args": {"name": "a"}}},
    }
    other = {
        "model": {"init_args": {"l1": 0.0, "hidden_sizes": [64, 32], "lr": 0.1}},
        "optimizer": None,
        "trainer": {"logger": {"init_args": {"name": "b"}}},
    }
    assert run_labels([run_with("r/a", base), run_with("r/b", other)]) == ["hidden_sizes=[64]", "hidden_sizes=[64, 32]"]
    # only the logger differs: the folders name the runs
    assert run_labels([run_with("x/v0", base), run_with("x/v1", {**base, "trainer": other["trainer"]})]) == [
        "x/v0",
        "x/v1",
    ]
    # two keys ending in "lr": the longer names tell them apart
    with_opt = {**base, "optimizer": {"init_args": {"lr": 0.5}}}
    labels = run_labels(
        [
            run_with("a/v0", {**base, "optimizer": {"init_args": {"lr": 0.1}}}),
            run_with("a/v1", {**with_opt, "model": {"init_args": {**base["model"]["init_args"], "lr": 0.2}}}),
        ]
    )
    assert labels == ["model.lr=0.1, optimizer.lr=0.1", "model.lr=0.2, optimizer.lr=0.5"]
    assert run_labels([run_with("a/v0", base), run_with("a/v1", None)]) == ["a/v0", "a/v1"]  # no config.yaml
    # a class is named by its place; model settings first; at most 4 settings, then a count
    dae = {
        "trainer": {"max_epochs": 4},
        "model": {
            "class_path": "lightning_rect.StackedDAE",
            "init_args": {"hidden_sizes": [16, 8], "noise": "masking", "a": 1, "b": 2},
        },
    }
    mlp = {
        "trainer": {"max_epochs": 2},
        "model": {"class_path": "lightning_rect.SparseMLP", "init_args": {"hidden_sizes": [16], "l1": 0.001}},
    }
    assert [label.replace("\n", " ") for label in run_labels([run_with("d/v0", dae), run_with("d/v1", mlp)])] == [
        "model=StackedDAE, hidden_sizes=[16, 8], noise=masking, a=1, … (+3)",
        "model=SparseMLP, hidden_sizes=[16], noise=null, a=null, … (+3)",
    ]


def test_plot_of_a_folder_without_metrics_is_one_line_and_a_folder_of_versions_means_the_newest(tmp_path, capsys):
    from lightning_rect.app.plots.command import main

    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no metrics.csv" in err and "runs/digits/version_0" in err
    for n in (0, 2, 10):
        (tmp_path / f"version_{n}").mkdir()
        (tmp_path / f"version_{n}" / "metrics.csv").write_text("epoch,step\n")
    assert resolve_run_folder(tmp_path) == tmp_path / "version_10"
    with pytest.raises(RunFolderError, match="no such folder"):
        load_run(tmp_path / "missing")


def hide_matplotlib(monkeypatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib...` now raises ImportError


def test_without_matplotlib_the_summary_is_one_line_saying_so(tmp_path, monkeypatch, capsys):
    folder = write_mlp_run(tmp_path / "run")
    hide_matplotlib(monkeypatch)
    assert write_summary_figure(folder) is None
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "matplotlib is not installed, so summary.png was not drawn" in out
    assert "pip install 'lightning-rect[plot]'" in out and not (folder / "summary.png").exists()


@pytest.mark.slow  # a whole fit; the one-line note itself: the test above
def test_a_fit_without_matplotlib_ends_with_results_json_and_a_one_line_note(tmp_path, monkeypatch, capsys):
    from lightning_rect.app.cli import main

    monkeypatch.chdir(tmp_path)
    hide_matplotlib(monkeypatch)
    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "digits.yaml"),
            "--model.init_args.hidden_sizes=[16]",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=5",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
        ]
    )
    [run] = list((tmp_path / "runs" / "digits").glob("version_*"))
    assert (run / "results.json").is_file() and (run / "firing_rates.json").is_file()
    assert not (run / "summary.png").exists()
    notes = [line for line in capsys.readouterr().out.splitlines() if "matplotlib" in line]
    assert notes == [
        "matplotlib is not installed, so summary.png was not drawn (results.json is written); "
        "install it with: pip install 'lightning-rect[plot]'  (or: pip install matplotlib)"
    ]


@pytest.mark.slow  # the session's finished fit (a few seconds, shared)
def test_a_digits_fit_writes_a_summary_png_of_the_documented_size(finished_run):
    from matplotlib.image import imread

    run = finished_run.folder  # digits, one layer of 16 units, 2 epochs (conftest.py)
    assert f"figure: runs/digits/{run.name}/summary.png" in finished_run.stdout
    image = imread(run / "summary.png")
    assert image.shape[:2] == (HEIGHT, WIDTH)
    assert image[..., :3].std() > 0.05  # drawn, not blank
    rates = json.loads((run / "firing_rates.json").read_text())
    assert len(rates["test"]["layers"]["layer_1"]["nonzero"]) == 16 and rates["val"]["epoch"] == 1
    results = finished_run.results
    redrawn = draw_summary(run)  # the same files draw the same figure again
    assert f"selected epoch {results['best_epoch']} of 0-1" in redrawn.get_suptitle()
