"""``python -m lightning_rect reproduce``: every experiment end to end on digits (tiny budget), reuse
of finished runs, sharding, the parallel scheduler's limits, and the paper's numbers."""

import json
import re
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from lightning_rect.reproduce import main
from lightning_rect.reproduce import paper
from lightning_rect.reproduce.budgets import BUDGETS, DATASETS
from lightning_rect.reproduce.experiments import EXPERIMENTS, Context
from lightning_rect.reproduce.runner import Options, Runner, available_cores, log_dir

TINY = ["--datasets", "digits", "--budget", "tiny", "--threads", "1"]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """In-process runs set torch's thread count; give the other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def load_runs(out: Path) -> list[dict]:
    return json.loads((out / "runs.json").read_text())["runs"]


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_experiment_end_to_end_then_reused(experiment, tmp_path, capsys):
    out = tmp_path / experiment
    main([experiment, *TINY, "--in-process", "--out", str(out)])
    printed = capsys.readouterr().out

    runs = load_runs(out)
    plan = EXPERIMENTS[experiment].plan(Context(BUDGETS["tiny"], ROOT / "configs"), ["digits"])
    assert [r["id"] for r in runs] == [s.id for s in plan]
    assert all(r["status"] == "done" for r in runs), [(r["id"], r["status"], r["error"]) for r in runs]
    for run in runs:
        results = run["results"]
        assert Path(run["log_dir"], "results.json").is_file()
        if run["phase"] == "finetune":
            assert 0 <= results["test/err"] <= 1 and 0 <= results["test/sparsity"] <= 1
            if run["needs"]:  # started from the best of its pre-training runs
                assert run["pretrained_from"] and Path(run["pretrained_from"]).is_file()
        else:
            assert results["model"] == "StackedDAE" and Path(results["checkpoint"]).is_file()
    assert f"[{len(runs)}/{len(runs)}]" in printed and "epoch 1/1" in printed  # progress lines

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
    stamps = {r["id"]: Path(r["log_dir"], "results.json").stat().st_mtime_ns for r in runs}
    main([experiment, *TINY, "--in-process", "--out", str(out)])
    printed = capsys.readouterr().out
    assert f"{len(runs)} runs, 0 to train" in printed and f"{len(runs)} reused" in printed
    rerun = load_runs(out)
    assert all(r["status"] == "reused" for r in rerun)
    assert {r["id"]: Path(r["log_dir"], "results.json").stat().st_mtime_ns for r in rerun} == stamps


def test_subprocess_runs_and_shards_then_merge(run_cli, tmp_path, capsys):
    out = tmp_path / "l1"
    proc = run_cli("reproduce", "l1_sweep", *TINY, "--shard", "1/3", "--out", str(out), timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "[1/1] epoch 1/1" in proc.stdout and "2 left to other shards" in proc.stdout
    runs = load_runs(out)
    assert sorted(r["status"] for r in runs) == ["done", "other shard", "other shard"]
    done = next(r for r in runs if r["status"] == "done")
    assert "output.log" in {p.name for p in Path(done["log_dir"]).parent.iterdir()}
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
        time.sleep(0.05)
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
    tanh_pretrain = next(s.id for s in specs if s.phase == "pretrain" and s.labels["activation"] == "tanh")
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
    for dataset, facts in DATASETS.items():
        assert (ROOT / "configs" / facts.config).is_file()
        assert (ROOT / "configs" / facts.pretrain_config).is_file(), facts.pretrain_config
        assert (ROOT / "configs" / facts.semi_config).is_file()


@pytest.mark.parametrize("args, message", [
    (["table1", "--parallel", str(available_cores() + 1)], "more runs than cores"),
    (["table1", "--parallel", "2", "--in-process"], "one run at a time"),
    (["table1", "--datasets", "imagenet"], "unknown data set 'imagenet'; choose from digits, mnist"),
    (["table1", "--shard", "3/3"], "--shard 3/3"),
])
def test_bad_arguments_are_one_line_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_paper_numbers_are_those_of_paper_md():
    paper_md = ROOT.parent / "shared" / "PAPER.md"
    if not paper_md.is_file():
        pytest.skip(f"{paper_md} is not here")
    rows = re.findall(r"^\|[^|\n]*\| ([\d.]+)% \| ([\d.]+)% \| ([\d.]+)% \| ([\d.]+)% \|$", paper_md.read_text(), re.M)
    ours = [paper.TABLE1[(activation, pre)] for pre in (True, False) for activation in ("rectifier", "tanh", "softplus")]
    assert [[float(v) for v in row] for row in rows[:6]] == [[t[d] for d in ("mnist", "cifar10", "nistp", "norb")]
                                                             for t in ours]


def test_reports_name_run_folders_relative_to_the_working_directory(tmp_path, monkeypatch):
    from lightning_rect.reproduce.report import _shown

    monkeypatch.chdir(tmp_path)
    assert _shown(tmp_path / "reproductions" / "table1" / "runs") == Path("reproductions/table1/runs")
    elsewhere = tmp_path.parent / "elsewhere" / "runs"
    assert _shown(elsewhere) == elsewhere  # outside the working directory: left as it is
