"""``python -m lightning_rect reproduce``: every experiment end to end on digits (tiny budget), reuse
of finished runs (and when not to), sharding, the parallel scheduler's limits, reports rewritten
from runs.json, and the paper's numbers."""

import dataclasses
import json
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT

import lightning_rect
from lightning_rect.reproduce import inputs as inputs_module
from lightning_rect.reproduce import main, paper
from lightning_rect.reproduce.budgets import BUDGETS, DATASETS
from lightning_rect.reproduce.experiments import EXPERIMENTS, Context
from lightning_rect.reproduce.inputs import INPUTS_FILE
from lightning_rect.reproduce.plan import Cell, early_stopping
from lightning_rect.reproduce.runner import Options, Runner, available_cores, log_dir, run_dir

TINY = ["--datasets", "digits", "--budget", "tiny", "--threads", "1"]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """In-process runs set torch's thread count; give the other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def short_digits_epochs(monkeypatch):
    """The tiny budget with 20 training batches per epoch on digits too, as on every other data set
    (the budget itself runs all 120 of digits'): the same pipeline, runs about 5x shorter."""
    tiny = BUDGETS["tiny"]
    trainer = {**tiny.trainer, "digits": {**tiny.trainer["digits"], "limit_train_batches": 20}}
    monkeypatch.setitem(BUDGETS, "tiny", dataclasses.replace(tiny, trainer=trainer))


def load_runs(out: Path) -> list[dict]:
    return json.loads((out / "runs.json").read_text())["runs"]


@pytest.mark.slow
@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_experiment_end_to_end_then_reused(experiment, tmp_path, capsys, no_summary_figures, short_digits_epochs):
    """(The runs' own summary.png is left out: reports do not read it, and test_plots checks it.)"""
    out = tmp_path / experiment
    main([experiment, *TINY, "--in-process", "--out", str(out)])
    printed = capsys.readouterr().out

    runs = load_runs(out)
    plan = EXPERIMENTS[experiment].plan(Context(BUDGETS["tiny"], ROOT / "configs"), ["digits"])
    assert [r["id"] for r in runs] == [s.id for s in plan]
    assert all(r["status"] == "done" for r in runs), [(r["id"], r["status"], r["error"]) for r in runs]
    for run in runs:
        results = run["results"]
        assert (out / run["log_dir"] / "results.json").is_file()  # runs.json names it relative to the output
        if run["phase"] == "finetune":
            assert 0 <= results["test/err"] <= 1 and 0 <= results["test/sparsity/mean"] <= 1
            if run["needs"]:  # started from the best of its pre-training runs
                assert run["pretrained_from"] and Path(run["pretrained_from"]).is_file()
        else:
            # the checkpoint relative to the run's folder: the repository keeps no path of this machine
            assert results["model"] == "StackedDAE" and (out / run["log_dir"] / results["checkpoint"]).is_file()
    assert f"[{len(runs)}/{len(runs)}]" in printed and "epoch 1/1" in printed  # progress lines
    drawn = sorted(folder.resolve() for folder in no_summary_figures)  # each run's figure, as a fit draws it
    assert drawn == sorted((out / r["log_dir"]).resolve() for r in runs)

    markdown = (out / f"{experiment}.md").read_text()
    assert all(f"`{r['id']}`" in markdown for r in runs)
    for run in runs:  # epochs run, then the best one numbered from 0 as in its checkpoint's name
        [row] = [line for line in markdown.splitlines() if line.startswith(f"| `{run['id']}`")]
        assert f"| {run['results']['epochs']} | {run['results']['best_epoch']} |" in row, row
    assert "paper" in markdown and "diff" in markdown
    if experiment == "table1":  # all six networks and both sparsity rows have our number
        rows = [line for line in markdown.splitlines() if "pre-training |" in line]
        assert len(rows) == 8 and all(re.search(r"\| \d+\.\d+% \|", row) for row in rows)
        assert sum(r["chosen"] for r in runs if r["phase"] == "finetune") == 6
    png = out / f"{experiment}.png"
    assert png.is_file() == EXPERIMENTS[experiment].has_figure
    if png.is_file():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A rerun trains nothing: every run is reused and no results.json is rewritten.
    stamps = {r["id"]: (out / r["log_dir"] / "results.json").stat().st_mtime_ns for r in runs}
    main([experiment, *TINY, "--in-process", "--out", str(out)])
    printed = capsys.readouterr().out
    assert f"{len(runs)} runs, 0 to train" in printed and f"{len(runs)} reused" in printed
    rerun = load_runs(out)
    assert all(r["status"] == "reused" for r in rerun)
    assert {r["id"]: (out / r["log_dir"] / "results.json").stat().st_mtime_ns for r in rerun} == stamps


@pytest.mark.slow
def test_subprocess_runs_and_shards_then_merge(tmp_path, capsys, no_summary_figures, short_digits_epochs):
    out = tmp_path / "l1"
    main(["l1_sweep", *TINY, "--shard", "1/3", "--out", str(out)])  # its one run in a child process
    printed = capsys.readouterr().out
    assert "[1/1] epoch 1/1" in printed and "2 left to other shards" in printed
    runs = load_runs(out)
    assert sorted(r["status"] for r in runs) == ["done", "other shard", "other shard"]
    done = next(r for r in runs if r["status"] == "done")
    assert "output.log" in {p.name for p in (out / done["log_dir"]).parent.iterdir()}
    assert "pending" not in (out / "l1_sweep.md").read_text()

    # The same folder without --shard (as after copying the shards' runs/ together) finishes the rest.
    main(["l1_sweep", *TINY, "--in-process", "--out", str(out)])
    capsys.readouterr()
    statuses = {r["id"]: r["status"] for r in load_runs(out)}
    assert statuses[done["id"]] == "reused" and sorted(statuses.values()) == ["done", "done", "reused"]


class FakeTraining:
    """Stands in for Runner._train: records how many runs overlap and in which order they start."""

    def __init__(self, runner: Runner, fail: set[str] = frozenset()):
        self.runner, self.fail = runner, fail
        self.lock = threading.Lock()
        self.active = self.most = 0
        self.started: list[str] = []

    def __call__(self, record, checkpoint, number):
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
            self.started.append(record.spec.id)
        time.sleep(0.02)  # long enough for two runs to overlap
        with self.lock:
            self.active -= 1
        if record.spec.phase == "pretrain" and record.spec.id in self.fail:
            record.status = "failed"
            return
        folder = log_dir(self.runner.o.out, record.spec)
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "checkpoints" / "best.ckpt").write_text("fake")
        record.results = {"best_val": 0.5, "test/err": 0.1, "checkpoint": str(folder / "checkpoints" / "best.ckpt")}
        record.status = "done"


def plan_table1(tmp_path, budget="tiny"):
    return EXPERIMENTS["table1"].plan(Context(BUDGETS[budget], ROOT / "configs"), ["digits"])


def test_parallel_runs_stay_within_the_limit_and_wait_for_pretraining(tmp_path, monkeypatch):
    specs = plan_table1(tmp_path, budget="paper")  # 4 learning rates: 36 runs
    runner = Runner(Options(out=tmp_path, configs_dir=ROOT / "configs", parallel=2, threads=1))
    fake = FakeTraining(runner)
    monkeypatch.setattr(runner, "_train", fake)
    records = runner.execute(runner.prepare(specs))
    assert fake.most == 2 and len(fake.started) == 36
    assert all(r.status == "done" for r in records.values())
    for spec in specs:
        for need in spec.needs:
            assert fake.started.index(need) < fake.started.index(spec.id)


def test_failed_pretraining_blocks_only_its_fine_tuning(tmp_path, monkeypatch):
    specs = plan_table1(tmp_path)
    tanh_pretrain = next(s.id for s in specs if s.cell == Cell("digits", "tanh", phase="pretrain"))
    runner = Runner(Options(out=tmp_path, configs_dir=ROOT / "configs"))
    monkeypatch.setattr(runner, "_train", FakeTraining(runner, fail={tanh_pretrain}))
    records = runner.execute(runner.prepare(specs))
    blocked = [r.spec.id for r in records.values() if r.status == "blocked"]
    assert blocked == [s.id for s in specs if tanh_pretrain in s.needs]
    assert sum(r.status == "done" for r in records.values()) == 7


def test_shards_keep_pretraining_with_its_fine_tuning(tmp_path):
    specs = plan_table1(tmp_path, budget="paper")
    owners = {}
    for index in range(3):
        runner = Runner(Options(out=tmp_path, configs_dir=ROOT / "configs", shard=(index, 3)))
        for run_id, record in runner.prepare(specs).items():
            if record.status == "pending":
                owners.setdefault(run_id, []).append(index)
    assert sorted(owners) == sorted(s.id for s in specs) and all(len(v) == 1 for v in owners.values())
    for spec in specs:
        assert all(owners[need] == owners[spec.id] for need in spec.needs)


def test_run_ids_are_stable_and_depend_on_the_settings_only(tmp_path):
    tiny, again, small = plan_table1(tmp_path), plan_table1(tmp_path), plan_table1(tmp_path, "small")
    assert [s.id for s in tiny] == [s.id for s in again]
    assert not {s.id for s in tiny} & {s.id for s in small}
    assert len({s.id for s in tiny}) == len(tiny)
    # where the data lie is not part of a run's identity, only of its command line
    runner = Runner(Options(out=tmp_path, configs_dir=ROOT / "configs", data_dir=Path("/data/here")))
    assert not any(key.endswith("data_dir") for spec in tiny for key in spec.settings)
    mnist = EXPERIMENTS["table1"].plan(Context(BUDGETS["small"], ROOT / "configs"), ["mnist"])
    assert "--data.init_args.data_dir=/data/here" in runner.command(mnist[0])


def test_every_budget_covers_every_data_set():
    for budget in BUDGETS.values():
        for dataset in DATASETS:
            for mapping in (budget.finetune_epochs, budget.pretrain_epochs_per_layer):
                assert dataset in mapping or "*" in mapping, (budget.name, dataset)
    for facts in DATASETS.values():
        assert (ROOT / "configs" / facts.config).is_file()
        assert (ROOT / "configs" / facts.pretrain_config).is_file(), facts.pretrain_config
        assert (ROOT / "configs" / facts.semi_config).is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["table1", "--parallel", str(available_cores() + 1)], "more runs than cores"),
        (["table1", "--parallel", "2", "--in-process"], "one run at a time"),
        (["table1", "--datasets", "imagenet"], "unknown data set 'imagenet'; choose from digits, mnist"),
        (["table1", "--shard", "3/3"], "--shard 3/3"),
    ],
)
def test_bad_arguments_are_one_line_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_paper_numbers_are_those_of_docs_paper_md():
    """``paper.TABLE1`` is the Table 1 of docs/paper.md#results-to-compare-against."""
    paper_md = ROOT / "docs" / "paper.md"
    rows = re.findall(r"^\|[^|\n]*\| ([\d.]+)% \| ([\d.]+)% \| ([\d.]+)% \| ([\d.]+)% \|$", paper_md.read_text(), re.M)
    ours = [
        paper.TABLE1[(activation, pre)] for pre in (True, False) for activation in ("rectifier", "tanh", "softplus")
    ]
    assert [[float(v) for v in row] for row in rows[:6]] == [
        [t[d] for d in ("mnist", "cifar10", "nistp", "norb")] for t in ours
    ]


def test_reports_name_run_folders_relative_to_the_working_directory(tmp_path, monkeypatch):
    from lightning_rect.reproduce.report import shown

    monkeypatch.chdir(tmp_path)
    assert shown(tmp_path / "reproductions" / "table1" / "runs") == Path("reproductions/table1/runs")
    elsewhere = tmp_path.parent / "elsewhere" / "runs"
    assert shown(elsewhere) == elsewhere  # outside the working directory: left as it is


@pytest.mark.parametrize(
    "experiment, folder",
    [
        ("table1", "table1/grid"),
        ("l1_sweep", "l1_sweep"),
        ("sharpness", "sharpness"),
        ("semi_supervised", "semi_supervised"),
        ("protocol", "protocol"),
    ],
)
def test_committed_reports_are_what_their_runs_json_gives(experiment, folder, tmp_path, monkeypatch, capsys):
    """The committed reports are current: rewriting them from their runs.json (--report-only, in a
    copy laid out as in the repository) gives the same Markdown, epochs numbered from 0."""
    committed = ROOT / "reproductions" / folder
    copy = tmp_path / "reproductions" / folder
    copy.mkdir(parents=True)
    shutil.copy(committed / "runs.json", copy / "runs.json")
    monkeypatch.chdir(tmp_path)
    main([experiment, "--report-only", "--configs", str(ROOT / "configs"), "--out", f"reproductions/{folder}"])
    capsys.readouterr()
    markdown = (copy / f"{experiment}.md").read_text()
    assert markdown == (committed / f"{experiment}.md").read_text()
    for run in load_runs(copy):
        [row] = [line for line in markdown.splitlines() if line.startswith(f"| `{run['id']}`")]
        assert run["cell"]["dataset"] == "mnist" and run["status"] in ("done", "reused", "failed")
        if run["status"] == "failed":  # a grid point that diverged: its error in the row, by relative path
            assert "diverged" in row and str(ROOT) not in row
            continue
        assert f"| {run['results']['epochs']} | {run['results']['best_epoch']} |" in row, row


#: What the repository keeps of a run (.gitignore lets these through under reproductions/*/runs/).
KEPT = ("spec.json", "inputs.json", "version_0/results.json", "version_0/config.yaml", "version_0/metrics.csv")


@pytest.mark.parametrize("experiment", ["pretraining", "table1"])
def test_paper_budget_reports_are_rewritten_from_the_committed_run_files_alone(
    experiment, tmp_path, monkeypatch, capsys
):
    """A fresh clone's `reproduce <experiment> --report-only` (the budget and command from runs.json)
    rewrites the committed report byte for byte from the run files the repository keeps, training nothing."""
    committed = ROOT / "reproductions" / experiment
    copy = tmp_path / "reproductions" / experiment
    for run in (committed / "runs").iterdir():
        for name in KEPT:
            if (run / name).is_file():
                (copy / "runs" / run.name / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(run / name, copy / "runs" / run.name / name)
    shutil.copy(committed / "runs.json", copy / "runs.json")
    shutil.copy(committed / "notes.md", copy / "notes.md")  # the experiment's reasoning, included by the report
    monkeypatch.chdir(tmp_path)
    main([experiment, "--report-only", "--configs", str(ROOT / "configs")])
    capsys.readouterr()
    assert (copy / f"{experiment}.md").read_text() == (committed / f"{experiment}.md").read_text()
    assert not list(copy.rglob("*.ckpt"))


# -- what decides reuse ----------------------------------------------------------------------------------
class FakeFit:
    """Stands in for Runner._attempt (the ``fit`` itself): writes a results.json and a checkpoint, so
    everything around it (reuse, inputs.json, resuming, pre-training choice) is the real code."""

    def __init__(self):
        self.trained: list[str] = []

    def __call__(self, runner, record, pretrained, resume, tag):
        folder = log_dir(runner.o.out, record.spec)
        (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
        checkpoint = folder / "checkpoints" / "best-epoch=0.ckpt"
        checkpoint.write_text("fake")
        results = {
            "model": "SparseMLP",
            "data": "fake",
            "selection_metric": "val/err",
            "best_val": 0.1,
            "best_epoch": 0,
            "epochs": 1,
            "fit_seconds": 0.0,
            "checkpoint": str(checkpoint),
            "test/err": 0.1,
            "test/sparsity/mean": 0.5,
        }
        (folder / "results.json").write_text(json.dumps(results))
        (folder / "metrics.csv").write_text(
            "epoch,step,val/err,test/err,test/sparsity/mean\n0,9,0.1,,\n0,10,,0.1,0.5\n"
        )
        self.trained.append(record.spec.id)
        return True, None


@pytest.fixture
def fake_fit(monkeypatch):
    from lightning_rect.reproduce import command

    fit = FakeFit()
    monkeypatch.setattr(Runner, "_attempt", lambda self, *args: fit(self, *args))
    # the probe of what the code does with a config stands in too (the fake data cannot train; the
    # probe itself: test_probe_*, tests/test_stale_runs.py); a test changes PROBE to change the code
    monkeypatch.setattr(inputs_module, "_PROBES", {})
    monkeypatch.setattr(inputs_module, "run_probe", lambda config, data_dir: dict(PROBE))
    # runs.json and the Markdown as always, without the experiment's figure (about 1 s each time; the
    # end-to-end test checks it)
    write_reports = command.write_reports
    monkeypatch.setattr(
        command, "write_reports", lambda *args, **kwargs: write_reports(*args, **{**kwargs, "plot": False})
    )
    return fit


#: What the stand-in probe returns (``fake_fit``).
PROBE = {"steps": 1, "losses": [1.0], "change": {}}


def write_mnist_files(folder: Path, content: bytes = b"idx") -> Path:
    raw = folder / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        (raw / name).write_bytes(content)
    return folder


def test_the_same_files_elsewhere_are_reused_and_changed_files_train_again(fake_fit, tmp_path, capsys, monkeypatch):
    """Runs finished on another machine (the data at another path, copied at another time) are reused;
    data files that differ in name or size make them train again. Run from a folder beside the data, as
    the repository beside ../shared/data: the data folder is recorded and named relative to it."""
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    first, other = write_mnist_files(tmp_path / "data"), write_mnist_files(tmp_path / "other")
    out = tmp_path / "out"
    args = ["l1_sweep", "--datasets", "mnist", "--budget", "tiny", "--in-process", "--out", str(out)]

    main([*args, "--data-dir", str(first)])
    ids = [r["id"] for r in load_runs(out)]
    assert len(ids) == 3 and fake_fit.trained == ids
    main([*args, "--data-dir", str(first)])  # same data: reused
    assert fake_fit.trained == ids and {r["status"] for r in load_runs(out)} == {"reused"}
    capsys.readouterr()

    main([*args, "--data-dir", str(other)])  # the same files in another folder: reused
    assert fake_fit.trained == ids and {r["status"] for r in load_runs(out)} == {"reused"}
    capsys.readouterr()

    (other / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"other idx")  # same name, another file
    main([*args, "--data-dir", str(other)])
    assert fake_fit.trained == ids * 2 and {r["status"] for r in load_runs(out)} == {"done"}
    printed = capsys.readouterr().out
    assert all(f"{i} trains again: data files in ../other differ" in printed for i in ids), printed
    inputs = json.loads((out / load_runs(out)[0]["log_dir"]).parent.joinpath(INPUTS_FILE).read_text())
    assert inputs["data"]["folder"] == "../other" and inputs["data"]["files"] == 2


def test_edited_config_or_changed_numerics_train_again_a_new_version_does_not_and_digits_ignore_the_data_dir(
    fake_fit, tmp_path, monkeypatch, capsys
):
    configs, out = tmp_path / "configs", tmp_path / "out"
    configs.mkdir()
    shutil.copy(ROOT / "configs" / "digits.yaml", configs / "digits.yaml")
    args = [
        "sharpness",
        "--datasets",
        "digits",
        "--budget",
        "tiny",
        "--in-process",
        "--out",
        str(out),
        "--configs",
        str(configs),
    ]
    main(args)
    runs = len(fake_fit.trained)  # a = 1, 3 and the rectifier with and without L1
    assert runs == 4
    main([*args, "--data-dir", str(tmp_path / "elsewhere")])  # digits ship with scikit-learn
    assert len(fake_fit.trained) == runs
    capsys.readouterr()

    with open(configs / "digits.yaml", "a") as config:
        config.write("# a comment changes nothing the run sees\n")
    main(args)
    assert len(fake_fit.trained) == runs
    config = configs / "digits.yaml"
    config.write_text(config.read_text().replace("seed_everything: 0", "seed_everything: 1"))
    main(args)
    assert len(fake_fit.trained) == 2 * runs and "config digits.yaml edited" in capsys.readouterr().out

    monkeypatch.setattr(lightning_rect, "__version__", "99.0")  # a release that trains the same way
    main(args)
    assert len(fake_fit.trained) == 2 * runs and {r["status"] for r in load_runs(out)} == {"reused"}
    capsys.readouterr()

    monkeypatch.setitem(PROBE, "losses", [1.0 + 1e-3])  # code that trains differently
    monkeypatch.setattr(inputs_module, "_PROBES", {})
    main(args)
    printed = capsys.readouterr().out
    assert len(fake_fit.trained) == 3 * runs
    assert "the code trains it differently: training loss at probe step 0 was 1, now 1.001" in printed

    monkeypatch.setitem(PROBE, "losses", [1.001 * (1 + 1e-6)])  # float-order noise of another processor
    monkeypatch.setattr(inputs_module, "_PROBES", {})
    main(args)
    assert len(fake_fit.trained) == 3 * runs and {r["status"] for r in load_runs(out)} == {"reused"}


def test_a_half_done_run_resumes_on_the_same_inputs_and_says_why_it_starts_again_on_others(
    fake_fit, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    args = ["sharpness", "--datasets", "digits", "--budget", "tiny", "--in-process", "--out", str(out)]
    main(args)
    version = out / load_runs(out)[0]["log_dir"]
    args = [*args, "--only", version.parent.name]

    def half_done() -> None:  # stopped mid-fit: a last checkpoint and no results
        (version / "results.json").unlink()
        (version / "checkpoints" / "last.ckpt").write_text("fake")
        fake_fit.resumed = []

    seen = []
    monkeypatch.setattr(
        Runner,
        "_attempt",
        lambda self, record, pretrained, resume, tag: (
            seen.append(resume),
            fake_fit(self, record, pretrained, resume, tag),
        )[1],
    )
    half_done()
    main(args)
    assert seen[-1] is not None and seen[-1].name == "last.ckpt"  # same inputs: goes on from it
    assert "resuming from" in capsys.readouterr().out

    half_done()
    monkeypatch.setitem(PROBE, "losses", [2.0])  # the code trains differently now
    monkeypatch.setattr(inputs_module, "_PROBES", {})
    main(args)
    printed = capsys.readouterr().out
    assert seen[-1] is None
    assert re.search(r"its checkpoint is not resumed, the code trains it differently: .*; starting again", printed), (
        printed
    )


def test_fine_tuning_trains_again_with_its_pretraining(fake_fit, tmp_path):
    specs = plan_table1(tmp_path)
    runner = Runner(Options(out=tmp_path, configs_dir=ROOT / "configs"))
    runner.execute(runner.prepare(specs))
    tanh_pretrain = next(s for s in specs if s.cell == Cell("digits", "tanh", phase="pretrain"))
    (run_dir(tmp_path, tanh_pretrain) / INPUTS_FILE).unlink()  # made by an older version: unknown inputs

    records = Runner(Options(out=tmp_path, configs_dir=ROOT / "configs")).prepare(specs)
    again = {i for i, r in records.items() if r.status == "pending"}
    assert again == {tanh_pretrain.id} | {s.id for s in specs if tanh_pretrain.id in s.needs}
    assert len(again) == 2 and all(r.status == "reused" for i, r in records.items() if i not in again)
    dependent = next(records[s.id] for s in specs if tanh_pretrain.id in s.needs)
    assert dependent.changed == ["its pre-training trains again"]


def test_a_lost_pretraining_checkpoint_trains_again_only_for_unfinished_fine_tuning(fake_fit, tmp_path):
    """Finished runs are committed without checkpoints: a pre-training run whose checkpoint is gone is
    reused while every fine-tuning run from it is finished, and trains again (alone) when one is not."""
    specs = plan_table1(tmp_path)
    runner = Runner(Options(out=tmp_path, configs_dir=ROOT / "configs"))
    runner.execute(runner.prepare(specs))
    for checkpoint in tmp_path.rglob("*.ckpt"):
        checkpoint.unlink()
    records = Runner(Options(out=tmp_path, configs_dir=ROOT / "configs")).prepare(specs)
    assert {r.status for r in records.values()} == {"reused"}

    tanh_pretrain = next(s for s in specs if s.cell == Cell("digits", "tanh", phase="pretrain"))
    dependent = next(s for s in specs if tanh_pretrain.id in s.needs)
    shutil.rmtree(run_dir(tmp_path, dependent))  # one fine-tuning run still to do
    records = Runner(Options(out=tmp_path, configs_dir=ROOT / "configs")).prepare(specs)
    assert {i for i, r in records.items() if r.status == "pending"} == {tanh_pretrain.id, dependent.id}
    assert records[tanh_pretrain.id].changed == [
        "its checkpoint is gone and an unfinished fine-tuning run starts from it"
    ]
    trained_before = len(fake_fit.trained)
    Runner(Options(out=tmp_path, configs_dir=ROOT / "configs")).execute(records)
    assert fake_fit.trained[trained_before:] == [tanh_pretrain.id, dependent.id]
    assert records[dependent.id].pretrained_from.startswith(str(run_dir(tmp_path, tanh_pretrain)))


def test_report_only_rebuilds_from_the_run_files_alone(fake_fit, tmp_path, monkeypatch, capsys):
    """A fresh clone holds each finished run's small files, not runs.json's machine or checkpoints:
    --report-only with the command's budget rebuilds the same tables from them, training nothing."""
    out = tmp_path / "reproductions" / "table1"
    args = ["table1", "--datasets", "digits", "--budget", "tiny", "--out", str(out)]
    main([*args, "--in-process"])
    trained = list(fake_fit.trained)
    report = (out / "table1.md").read_text()
    (out / "runs.json").unlink()
    for checkpoint in out.rglob("*.ckpt"):
        checkpoint.unlink()
    monkeypatch.chdir(tmp_path)
    main([*args, "--report-only"])
    assert fake_fit.trained == trained
    rebuilt = (out / "table1.md").read_text()
    table = lambda text: [line for line in text.splitlines() if "pre-training |" in line]  # noqa: E731
    assert table(rebuilt) == table(report) and len(table(rebuilt)) == 8
    assert all("10.00%" in row for row in table(rebuilt)[:6])  # each network's number, from its results.json


def test_report_only_counts_a_run_finished_since_runs_json_was_written(fake_fit, tmp_path, monkeypatch, capsys):
    """runs.json written when a grid was stopped says "interrupted" (with that attempt's seconds); a
    results.json that came later (the run finished, or was copied in) makes it done, timed by its own fit.
    A run resumed to its end is timed by its own fit too, which counts every attempt."""
    out = tmp_path / "t1"
    args = ["table1", "--datasets", "digits", "--budget", "tiny", "--out", str(out)]
    main([*args, "--in-process"])
    saved = json.loads((out / "runs.json").read_text())
    for run in saved["runs"]:
        run.update(status="interrupted", seconds=1.0)
    # and one run was resumed and finished: runs.json holds its last attempt's second, its fit all attempts
    saved["runs"][-1].update(status="done", seconds=1.0)
    (out / "runs.json").write_text(json.dumps(saved))
    for path in out.rglob("results.json"):  # each fit took a minute
        path.write_text(json.dumps({**json.loads(path.read_text()), "fit_seconds": 60.0}))
    copied = saved["runs"][0]["id"]  # one run's files came from another experiment's folder
    results = out / "runs" / copied / "version_0" / "results.json"
    results.write_text(json.dumps({**json.loads(results.read_text()), "copied_from": "elsewhere/runs/twin"}))
    main([*args, "--report-only"])
    capsys.readouterr()
    runs = len(saved["runs"])
    report = (out / "table1.md").read_text()
    assert f"Runs: {runs} ({runs} done); training time of the runs: {runs}.0 min." in report
    assert {run["status"] for run in load_runs(out)} == {"done"}
    [row] = [line for line in report.splitlines() if line.startswith(f"| `{copied}`")]
    assert "| done (copied from elsewhere/runs/twin) |" in row


def test_the_paper_budget_fine_tunes_mnist_with_early_stopping_on_a_narrowed_grid():
    from lightning_rect.reproduce.command import budget_of
    from lightning_rect.reproduce.runner import Record

    table1 = EXPERIMENTS["table1"]
    ctx = Context(BUDGETS["paper"], ROOT / "configs")
    specs = table1.plan(ctx, ["mnist", "cifar10"])
    mnist = [s for s in specs if s.dataset == "mnist"]
    assert {s.lr for s in mnist if s.phase == "pretrain"} == {0.01}
    assert {s.lr for s in mnist if s.phase == "finetune"} == {0.1, 0.03, 0.01}
    # one protocol: the pre-trained rows are the configs' (reproductions/pretraining's choice: 10 unscaled
    # DAE epochs per layer, fine-tuned without L1); the former one (30 rescaled epochs, L1 kept) is a variant
    assert ctx.config_value("mnist_pretrain.yaml", "model.init_args.rescale") is None
    assert ctx.config_value("mnist_pretrain.yaml", "model.init_args.epochs_per_layer") == 10
    main_rows = [s for s in mnist if s.cell.variant is None]
    former = [s for s in mnist if s.cell.variant == "dae30_rescale"]
    assert len(main_rows) == 21 and len(former) == 12
    for spec in main_rows:
        if spec.phase == "pretrain":
            assert spec.settings["model.init_args.rescale"] is False
            assert spec.settings["model.init_args.epochs_per_layer"] == 10
        elif spec.cell.pretrained:
            assert spec.settings["model.init_args.l1"] == 0.0 and spec.settings["trainer.max_epochs"] == 60
    for spec in former:
        if spec.phase == "pretrain":
            assert spec.settings["model.init_args.rescale"] is True
            assert spec.settings["model.init_args.epochs_per_layer"] == 30
            assert spec.settings["trainer.max_epochs"] == 90
    small = table1.plan(Context(BUDGETS["small"], ROOT / "configs"), ["mnist"])  # the config's DAE there
    assert not any("model.init_args.rescale" in s.settings for s in small)
    assert ctx.config_value("mnist.yaml", "trainer.max_epochs") == 60
    assert early_stopping(ctx, "mnist.yaml", 10) == {}  # the config stops after 10 epochs without a better val/err
    for spec in mnist:  # so the runs add no second stopper (Lightning refuses two alike)
        assert "trainer.callbacks+" not in spec.settings
    cifar = [s for s in specs if s.dataset == "cifar10"]  # the configs as written, the whole grid
    assert {s.lr for s in cifar} == {0.1, 0.01, 0.001, 0.0001}
    assert not any(
        "trainer.callbacks+" in s.settings or "trainer.max_epochs" in s.settings for s in cifar if s.phase == "finetune"
    )
    report = "\n".join(table1.markdown({s.id: Record(s) for s in mnist}, ["mnist"]))
    assert "Learning rates searched: pre-training 0.01; fine-tuning 0.1, 0.03, 0.01" in report
    assert "Pre-training on MNIST: the protocol the configs carry" in report
    assert "#### Variant: the former pre-training protocol" not in report  # no finished run of it here
    # rates given on the command line replace the narrowed ones
    chosen = table1.plan(Context(budget_of("paper", [0.03]), ROOT / "configs"), ["mnist"])
    assert {s.lr for s in chosen} == {0.03}


def test_early_stopping_is_added_only_where_the_config_has_none_and_never_contradicts_it(tmp_path):
    ctx = Context(BUDGETS["paper"], tmp_path)
    (tmp_path / "plain.yaml").write_text(
        "trainer:\n  callbacks:\n    - class_path: lightning_rect.callbacks.SparsityMonitor\n"
    )
    added = early_stopping(ctx, "plain.yaml", 7)["trainer.callbacks+"]
    assert added["class_path"].endswith("EarlyStopping") and added["init_args"]["patience"] == 7
    (tmp_path / "other.yaml").write_text(
        "trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.EarlyStopping\n"
        "      init_args: {monitor: val/err, mode: min, patience: 3}\n"
    )
    with pytest.raises(ValueError, match="other.yaml stops early with .*patience.*3.*make them agree"):
        early_stopping(ctx, "other.yaml", 10)


# -- the pretraining experiment's seeds --------------------------------------------------------------
def test_seeded_protocols_are_repeated_in_cells_of_their_own_with_their_own_pretraining():
    from lightning_rect.reproduce.experiments.pretraining import SEEDED, SEEDS, spread

    specs = EXPERIMENTS["pretraining"].plan(Context(BUDGETS["paper"], ROOT / "configs"), ["mnist"])
    by_id = {spec.id: spec for spec in specs}
    seeded = [spec for spec in specs if spec.cell.seed is not None]
    assert {(s.cell.variant, s.cell.seed) for s in seeded if s.phase == "finetune"} == {
        (tag, seed) for tag in SEEDED for seed in SEEDS
    }
    for spec in seeded:
        assert spec.settings["seed_everything"] == spec.cell.seed
        if spec.phase == "finetune":
            assert spec.lr == SEEDED[spec.cell.variant]
            for need in spec.needs:  # a repeat starts from its own seed's DAE, never the grid's
                assert by_id[need].cell.seed == spec.cell.seed
    # the grid's runs are unchanged by the repeats: no seed setting, the ids the committed runs have
    assert all("seed_everything" not in spec.settings for spec in specs if spec.cell.seed is None)
    committed = {folder.name for folder in (ROOT / "reproductions" / "pretraining" / "runs").iterdir()}
    assert "mnist-rectifier-pre-dae10_rescale-lr0.1-78fb6e5c" in committed and committed <= set(by_id)
    # each DAE states its epochs and rescaling: the configs, which now carry the chosen protocol,
    # do not change what "the DAE as first configured" is
    for spec in specs:
        if spec.phase == "pretrain":
            assert spec.settings["model.init_args.epochs_per_layer"] in (10, 30)
            assert spec.settings["model.init_args.rescale"] is ("rescale" in spec.cell.variant)
    assert spread([1.0, 2.0, 3.0]) == "2.00% ± 1.00 (1.00-3.00, n=3)"


def test_a_pretraining_run_stopped_while_it_trains_again_for_its_checkpoint_keeps_its_finished_runs(
    fake_fit, tmp_path, monkeypatch
):
    """The DAE trains again only for its checkpoint; stopped half-way (no results.json yet), the next
    invocation still reuses the fine-tuning runs that had finished from it and trains only the rest."""
    specs = plan_table1(tmp_path, budget="paper")  # 4 fine-tuning rates per DAE
    runner = Runner(Options(out=tmp_path, configs_dir=ROOT / "configs"))
    runner.execute(runner.prepare(specs))
    for checkpoint in tmp_path.rglob("*.ckpt"):
        checkpoint.unlink()
    tanh = next(s for s in specs if s.cell == Cell("digits", "tanh", phase="pretrain"))
    dependents = [s for s in specs if tanh.id in s.needs]
    shutil.rmtree(run_dir(tmp_path, dependents[0]))  # one fine-tuning run still to do
    runner = Runner(Options(out=tmp_path, configs_dir=ROOT / "configs"))
    records = runner.prepare(specs)
    [tanh_pretrain] = [records[n].spec for n in dependents[0].needs if records[n].status == "pending"]
    monkeypatch.setattr(Runner, "_attempt", lambda self, *args: (False, "stopped half-way"))  # no results.json
    runner._train(records[tanh_pretrain.id], None, 1)
    assert not (log_dir(tmp_path, tanh_pretrain) / "results.json").exists()

    records = Runner(Options(out=tmp_path, configs_dir=ROOT / "configs")).prepare(specs)
    pending = {i for i, r in records.items() if r.status == "pending"}
    assert pending == {tanh_pretrain.id, dependents[0].id}
    assert all(records[s.id].status == "reused" for s in dependents[1:]) and len(dependents) > 1


def damage(folder: Path, how: str) -> Path:
    """One committed run file damaged as a lab meets it: cut short, of the wrong type, edited by hand."""
    results = folder / "results.json"
    text = results.read_text()
    if how == "truncated":
        results.write_text(text[: len(text) // 2])
    elif how == "a list":
        results.write_text("[1, 2]")
    elif how == "a string for a number":
        results.write_text(json.dumps({**json.loads(text), "best_val": "0.1"}))
    elif how == "test error edited":
        results.write_text(json.dumps({**json.loads(text), "test/err": 0.005}))
    elif how == "inputs a list":
        (folder.parent / INPUTS_FILE).write_text("[]")
    return results if how != "inputs a list" else folder.parent / INPUTS_FILE


@pytest.mark.parametrize(
    "how, problem",
    [
        ("truncated", "is not valid JSON"),
        ("a list", "holds a JSON list, not an object"),
        ("a string for a number", "best_val is '0.1', not a number"),
        ("test error edited", "test/err is 0.005, but metrics.csv logged 0.1"),
        ("inputs a list", "holds a JSON list, not the object a record of a run's inputs is"),
    ],
)
def test_a_damaged_run_file_is_one_line_and_the_run_is_neither_reported_retrained_nor_deleted(
    fake_fit, tmp_path, monkeypatch, capsys, how, problem
):
    out = tmp_path / "t1"
    args = ["table1", "--datasets", "digits", "--budget", "tiny", "--out", str(out)]
    main([*args, "--in-process"])
    capsys.readouterr()
    first = next(p for p in sorted((out / "runs").iterdir()) if "-pre-" in p.name or "-nopre-" in p.name)
    path = damage(first / "version_0", how)
    damaged = path.read_bytes()
    report = (out / "table1.md").read_text()
    trained = list(fake_fit.trained)

    if path.name == "results.json":  # --report-only reads results, not inputs: refused, the report not rewritten
        with pytest.raises(SystemExit) as exit_:
            main([*args, "--report-only"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and f"{path}: {problem}" in err and "Traceback" not in err
        assert (out / "table1.md").read_text() == report

    main([*args, "--dry-run"])  # --dry-run: listed as damaged, with the file and why
    printed = capsys.readouterr().out
    assert f"[damaged] {first.name}" in printed and problem in printed

    with pytest.raises(SystemExit) as exit_:  # a real run: nothing trained, nothing deleted
        main([*args, "--in-process"])
    assert exit_.value.code == 2 and problem in capsys.readouterr().err
    assert fake_fit.trained == trained and path.read_bytes() == damaged


def test_a_run_folder_another_process_holds_is_neither_resumed_nor_deleted(fake_fit, tmp_path, capsys):
    """The fit of another process writes there (its lock held): the runner leaves it alone, says so,
    and trains the rest."""
    from lightning_rect.app.run_lock import run_lock

    out = tmp_path / "t1"
    specs = plan_table1(tmp_path)
    held = next(s for s in specs if s.phase == "finetune" and not s.needs)
    folder = log_dir(out, held)
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text("epoch,step\n0,1\n")  # what the other process wrote so far
    with run_lock(folder), pytest.raises(SystemExit) as exit_:
        main(["table1", "--datasets", "digits", "--budget", "tiny", "--out", str(out), "--in-process"])
    assert exit_.value.code == 1  # one run could not train: said, and the status column names it
    records = {r["id"]: r for r in load_runs(out)}
    assert records[held.id]["status"] == "failed" and "is in use by pid" in records[held.id]["error"]
    assert held.id not in fake_fit.trained and (folder / "metrics.csv").read_text() == "epoch,step\n0,1\n"
    assert all(r["status"] == "done" for i, r in records.items() if i != held.id and held.id not in r["needs"])
