"""``python -m lightning_rect reproduce <experiment> ...``: argument parsing and the whole flow."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fnmatch
import json
import shlex
import signal
import sys
import time
from pathlib import Path

from lightning_rect.app.run_lock import FolderInUse, run_lock
from lightning_rect.reproduce.budgets import BUDGETS, DATASETS, Budget
from lightning_rect.reproduce.experiments import EXPERIMENTS, Context
from lightning_rect.reproduce.plan import RunSpec
from lightning_rect.reproduce.report import write_reports
from lightning_rect.reproduce.run_files import RunFileError
from lightning_rect.reproduce.runner import (
    CHECKPOINT_GONE,
    Options,
    Record,
    Runner,
    available_cores,
    log_dir,
    read_results,
)
from lightning_rect.reproduce.sweeps import write_sweeps

#: The budget of the runs unless --budget says otherwise.
DEFAULT_BUDGET = "small"
#: The budget of the W&B sweeps: the configs as written and the paper's learning rates.
SWEEP_BUDGET = "paper"

EPILOG = """\
examples:
  python -m lightning_rect reproduce table1 --data-dir ../shared/data --datasets mnist --budget small
  python -m lightning_rect reproduce l1_sweep --data-dir ../shared/data --budget small
  python -m lightning_rect reproduce sharpness --datasets digits --budget tiny --in-process

  python -m lightning_rect reproduce table1 --sweep --datasets digits mnist   # W&B sweeps of the plan
  python -m lightning_rect reproduce l1_sweep --report-only   # rewrite the report from runs.json

Finished runs are reused when their data files, config file and lightning_rect version are the
ones of this command (else they train again): rerun the same command to continue an interrupted
reproduction. Several machines: give each the same command with --shard i/n (i = 0..n-1), the
data at the same path (copied with their times: rsync -a), copy every <out>/runs/ folder into one,
and rerun without --shard to collect the tables.
Any scheduler: --dry-run prints every run's `fit` command; runs that write into <out>/runs/<id>/
are picked up by the next reproduce. W&B sweeps of the same grids: --sweep writes them (the
paper budget's are in configs/sweeps/).
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_rect reproduce",
        description="Rerun one of the paper's experiments and write its table (and figure) beside the paper's numbers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("experiment", choices=sorted(EXPERIMENTS), help="which table or figure")
    parser.add_argument(
        "--datasets",
        nargs="+",
        metavar="NAME",
        help=f"data sets, from {', '.join(DATASETS)} (default: the paper's for the experiment)",
    )
    parser.add_argument(
        "--budget",
        choices=list(BUDGETS),
        help="tiny: pipeline check; small (default): shortened, ~1 h per data set on 2 CPU cores; "
        "grid: the paper's learning-rate grid in both phases with short training; "
        "paper (the default with --sweep): full protocol with the learning-rate search",
    )
    parser.add_argument(
        "--lrs",
        type=float,
        nargs="+",
        metavar="LR",
        help="learning rates to try instead of the budget's (both phases), e.g. --lrs 0.1: "
        "one rate from the paper's grid for a cheaper run",
    )
    parser.add_argument(
        "--pretrain-lrs",
        type=float,
        nargs="+",
        metavar="LR",
        help="learning rates of the pre-training runs, when they differ from --lrs",
    )
    parser.add_argument("--data-dir", type=Path, help="folder holding the data sets (as data.init_args.data_dir)")
    parser.add_argument(
        "--out", type=Path, help="output folder (default: reproductions/<experiment>; with --sweep: configs/sweeps/)"
    )
    parser.add_argument("--configs", type=Path, help="folder of the YAML configs (default: the repository's configs/)")
    parser.add_argument(
        "--parallel",
        type=int,
        metavar="N",
        help="runs at once, each with cores/N threads (default: one single-thread run per core, "
        "which trains faster in all than one run on every core; benchmarks/README.md)",
    )
    parser.add_argument("--threads", type=int, help="torch threads per run (default: cores / parallel)")
    parser.add_argument(
        "--plain-sgd",
        action="store_true",
        help="train every run with autograd's gradients and torch.optim.SGD; by default runs whose update is "
        "plain SGD take the in-place step (fused_sgd: the same step, rounded differently, faster; "
        "finished runs are reused either way)",
    )
    parser.add_argument("--shard", metavar="I/N", help="run only shard I of N (I = 0..N-1) of the runs to train")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="train in this process instead of one child process per run (saves a process start "
        "per run; for tiny runs)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan, each run's status (stale runs with what changed) and fit command; train nothing",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="PATTERN",
        help="only the runs whose id matches one of these shell patterns (e.g. 'mnist-tanh-*'), "
        "with the pre-training runs they start from",
    )
    parser.add_argument("--verbose", action="store_true", help="show everything the runs print, not only progress")
    parser.add_argument("--wandb", metavar="PROJECT", help="also log every run to this W&B project (group: experiment)")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="write the plan as W&B sweep files (one per data set and phase) instead of training",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the report from the finished runs' files in <out>/runs/ (and <out>/runs.json); train nothing",
    )
    return parser.parse_args(argv)


class UsageError(Exception):
    pass


def check_args(args: argparse.Namespace) -> tuple[list[str], tuple[int, int] | None, int]:
    """Validated data sets, shard and threads per run; UsageError names what is wrong."""
    experiment = EXPERIMENTS[args.experiment]
    datasets = args.datasets or list(experiment.default_datasets)
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown:
        raise UsageError(f"unknown data set {', '.join(map(repr, unknown))}; choose from {', '.join(DATASETS)}")
    shard = None
    if args.shard:
        try:
            index, count = (int(part) for part in args.shard.split("/"))
        except ValueError:
            raise UsageError(f"--shard must look like I/N, e.g. 0/4, got {args.shard!r}") from None
        if not (count >= 1 and 0 <= index < count):
            raise UsageError(f"--shard {args.shard}: need N >= 1 and 0 <= I < N")
        shard = (index, count)
    cores = available_cores()
    for option, lrs in (("--lrs", args.lrs), ("--pretrain-lrs", args.pretrain_lrs)):
        if lrs is not None and not all(0 < lr < float("inf") for lr in lrs):
            raise UsageError(f"{option} must be positive numbers, got {' '.join(map(str, lrs))}")
    if args.parallel is None:  # one single-thread run per core, unless told otherwise
        args.parallel = 1 if args.in_process else max(1, cores // (args.threads or 1))
    if args.parallel < 1:
        raise UsageError(f"--parallel must be >= 1, got {args.parallel}")
    if args.in_process and args.parallel > 1:
        raise UsageError("--in-process runs one run at a time; drop --parallel or --in-process")
    if args.parallel > cores:
        raise UsageError(
            f"--parallel {args.parallel} would put more runs than cores ({cores}) on this machine; "
            f"runs that share cores train several times slower than one after the other"
        )
    threads = args.threads or max(1, cores // args.parallel)
    if threads * args.parallel > cores:
        raise UsageError(
            f"--threads {threads} x --parallel {args.parallel} exceeds the {cores} cores; "
            "oversubscribed cores make every run slower"
        )
    return datasets, shard, threads


def default_configs_dir() -> Path:
    """The repository's configs/ (an editable install or a checkout), else ./configs."""
    here = Path(__file__).resolve().parents[2] / "configs"
    return here if here.is_dir() else Path.cwd() / "configs"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.sweep:
            return write_sweep_files(args)
        if args.report_only:
            return rewrite_reports(args)
        datasets, shard, threads = check_args(args)
        budget = args.budget or DEFAULT_BUDGET
        configs_dir = (args.configs or default_configs_dir()).resolve()
        specs = EXPERIMENTS[args.experiment].plan(
            Context(budget_of(budget, args.lrs, args.pretrain_lrs), configs_dir), datasets
        )
        if args.only:
            specs = only(specs, args.only)
        missing = sorted({s.config for s in specs if not (configs_dir / s.config).is_file()})
        if missing:
            raise UsageError(f"config file(s) {', '.join(missing)} not found in {configs_dir}; pass --configs DIR")
    except (UsageError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

    out = (args.out or Path("reproductions") / args.experiment).resolve()
    data_dir = args.data_dir.resolve() if args.data_dir else None
    options = Options(
        out=out,
        configs_dir=configs_dir,
        data_dir=data_dir,
        in_process=args.in_process,
        parallel=args.parallel,
        threads=threads,
        shard=shard,
        verbose=args.verbose,
        wandb_project=args.wandb,
        experiment=args.experiment,
        fused_sgd=not args.plain_sgd,
    )
    meta = {
        "experiment": args.experiment,
        "budget": budget,
        "lrs": args.lrs,
        "pretrain_lrs": args.pretrain_lrs,
        "datasets": datasets,
        "command": "python -m lightning_rect reproduce " + shlex.join(sys.argv[2:] if argv is None else argv),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }

    def report(records: dict[str, Record], plot: bool = False) -> dict:
        return write_reports(out, EXPERIMENTS[args.experiment], meta, records, datasets, plot=plot)

    if args.dry_run:
        return _dry_run(Runner(options), specs, args, budget, datasets, threads, shard, out)
    try:
        with run_lock(out, "reproduction output folder"), stop_on_sigterm():
            _run(Runner(options, on_change=report), specs, args, budget, datasets, threads, shard, out, report)
    except FolderInUse as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Terminated:
        sys.exit(143)


def only(specs: list[RunSpec], patterns: list[str]) -> list[RunSpec]:
    """The runs matching ``patterns`` and, before them, the runs they need (in plan order)."""
    by_id = {s.id: s for s in specs}
    wanted = {s.id for s in specs if any(fnmatch.fnmatchcase(s.id, p) for p in patterns)}
    if not wanted:
        raise UsageError(
            f"--only {' '.join(patterns)} matches none of the plan's {len(specs)} runs (--dry-run lists them)"
        )
    todo = list(wanted)
    while todo:
        for need in by_id[todo.pop()].needs:
            if need not in wanted:
                wanted.add(need)
                todo.append(need)
    return [s for s in specs if s.id in wanted]


def _summary(records, args, budget, datasets, threads, shard, out) -> None:
    counts = _counts(records)
    mode = "in this process" if args.in_process else f"{args.parallel} at a time, {threads} thread(s) each"
    mode += ", plain SGD" if args.plain_sgd else ", in-place SGD where it holds"
    print(
        f"{args.experiment} ({budget} budget, {', '.join(datasets)}): {len(records)} runs, "
        f"{counts.get('pending', 0)} to train ({mode}), {counts.get('reused', 0)} reused"
        + (f", {counts.get('other shard', 0)} left to other shards" if shard else "")
        + f"; output in {out}"
    )
    for record in (r for r in records.values() if r.changed):
        print(f"{record.spec.id} trains again: {'; '.join(record.changed)}")


def _dry_run(runner: Runner, specs, args, budget, datasets, threads, shard, out) -> None:
    records = runner.prepare(specs)
    _summary(records, args, budget, datasets, threads, shard, out)
    for record in records.values():
        print(f"  [{record.status}] {record.spec.id}")
        if record.status == "damaged":
            print(f"      {record.error}")
            continue
        if record.changed == [CHECKPOINT_GONE]:  # trained again for its checkpoint, not made stale by a change
            print(f"      again: {CHECKPOINT_GONE}")
        elif record.changed:
            print(f"      stale: {'; '.join(record.changed)}")
        print(f"      {shlex.join(record.command)}")
    stale = sum(bool(r.changed) and r.changed != [CHECKPOINT_GONE] for r in records.values())
    damaged = sum(r.status == "damaged" for r in records.values())
    print(f"{stale} stale run(s), {damaged} damaged")


def _refuse_damaged(records: dict[str, Record]) -> None:
    """Stop before anything trains when a finished run's files are damaged: they are neither
    reported, reused, retrained nor deleted until someone looks at them."""
    damaged = [r for r in records.values() if r.status == "damaged"]
    if damaged:
        for record in damaged:
            print(f"error: {record.error}", file=sys.stderr)
        print(
            f"error: {len(damaged)} finished run(s) have damaged files; nothing was trained or changed", file=sys.stderr
        )
        sys.exit(2)


def _run(runner: Runner, specs, args, budget, datasets, threads, shard, out, report) -> None:
    records = runner.prepare(specs)
    _refuse_damaged(records)
    _summary(records, args, budget, datasets, threads, shard, out)
    try:
        runner.execute(records)
    except KeyboardInterrupt as stop:
        report(records, plot=True)
        why = "stopped by SIGTERM" if isinstance(stop, Terminated) else "interrupted"
        print(
            f"\n{why}; every running run was told to stop and has saved; rerun the same command to go on "
            f"(finished runs are reused, a stopped run resumes from its last checkpoint). Partial results: {out}",
            file=sys.stderr,
        )
        if isinstance(stop, Terminated):
            raise
        sys.exit(130)
    paths = report(records, plot=True)
    counts = _counts(records)
    print(f"\n{args.experiment}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for kind, path in paths.items():
        if path is not None:
            print(f"  {kind}: {path}")
    bad = counts.get("failed", 0) + counts.get("blocked", 0)
    if bad:
        print(
            f"{bad} run(s) failed or were blocked; see the status column of {paths['markdown']} "
            "and each run's output.log",
            file=sys.stderr,
        )
        sys.exit(1)


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a scheduler's time limit) arrived: stop like Ctrl-C, then exit with 143."""


@contextlib.contextmanager
def stop_on_sigterm():
    """For the length of the block, SIGTERM raises ``Terminated`` in the main thread, so the runner
    stops its children and waits for them to save instead of dying and orphaning them."""

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def budget_of(name: str, lrs: list[float] | None, pretrain_lrs: list[float] | None = None) -> Budget:
    """The named budget, with ``--lrs`` / ``--pretrain-lrs`` in place of its learning rates when given."""
    budget = BUDGETS[name]
    if lrs:
        budget = dataclasses.replace(budget, lrs=tuple(lrs), phase_lrs={})
    if pretrain_lrs:
        budget = dataclasses.replace(budget, pretrain_lrs=tuple(pretrain_lrs), phase_lrs={})
    return budget


def write_sweep_files(args: argparse.Namespace) -> None:
    """``--sweep``: the paper budget's plan as W&B sweep files."""
    if args.budget not in (None, SWEEP_BUDGET):
        raise UsageError(
            f"--sweep writes the {SWEEP_BUDGET} budget's grids (the configs as written, the paper's "
            "learning rates), for machines that run them in full; drop --budget"
        )
    datasets, _, _ = check_args(args)
    configs_dir = (args.configs or default_configs_dir()).resolve()
    experiment = EXPERIMENTS[args.experiment]
    specs = experiment.plan(Context(BUDGETS[SWEEP_BUDGET], configs_dir), datasets)
    folder = args.out or configs_dir / "sweeps"
    for path in write_sweeps(experiment.sweeps(specs, datasets), specs, folder, args.data_dir, configs_dir):
        print(f"wrote {path}")


def rewrite_reports(args: argparse.Namespace) -> None:
    """``--report-only``: the report again, in the current format, from the finished runs' own files
    (``<out>/runs/<id>/version_0/results.json``, committed to the repository), else from what
    ``<out>/runs.json`` recorded. The plan comes from the command's --budget, --datasets, --lrs and
    --pretrain-lrs, each defaulting to what runs.json recorded."""
    out = (args.out or Path("reproductions") / args.experiment).resolve()
    try:
        saved = json.loads((out / "runs.json").read_text())
    except FileNotFoundError:
        saved = {}
    except (OSError, ValueError) as err:
        raise UsageError(f"--report-only cannot read {out / 'runs.json'}: {err}") from None
    _check_runs_json(out / "runs.json", saved)
    if saved and saved.get("experiment") != args.experiment:
        raise UsageError(f"{out / 'runs.json'} holds {saved.get('experiment')!r}, not {args.experiment!r}")
    meta = {key: value for key, value in saved.items() if key != "runs"}
    given = {"budget": args.budget, "datasets": args.datasets, "lrs": args.lrs, "pretrain_lrs": args.pretrain_lrs}
    meta.update({key: value for key, value in given.items() if value is not None})
    meta.setdefault("experiment", args.experiment)
    meta.setdefault("datasets", list(EXPERIMENTS[args.experiment].default_datasets))
    meta.setdefault(
        "command", "python -m lightning_rect reproduce " + args.experiment + " (runs collected by --report-only)"
    )
    if "budget" not in meta:
        raise UsageError(f"--report-only: no {out / 'runs.json'} says which budget the runs had; pass --budget")
    if meta["budget"] not in BUDGETS:
        raise UsageError(
            f"{out / 'runs.json'} names budget {meta['budget']!r}, which does not exist; "
            f"pass --budget with one of {', '.join(BUDGETS)}"
        )
    configs_dir = (args.configs or default_configs_dir()).resolve()
    experiment = EXPERIMENTS[args.experiment]
    specs = experiment.plan(
        Context(budget_of(meta["budget"], meta.get("lrs"), meta.get("pretrain_lrs")), configs_dir), meta["datasets"]
    )
    saved_runs = {run["id"]: run for run in saved.get("runs", [])}
    records = {}
    damaged = []
    for spec in specs:
        run = saved_runs.get(spec.id, {})
        try:
            results = read_results(out, spec)
        except RunFileError as err:
            damaged.append(str(err))
            continue
        # a run whose results.json exists has finished, whatever runs.json said when it was written (then
        # runs.json's seconds are those of an earlier attempt, and the run's own fit_seconds count)
        saved = run.get("status")
        recorded = saved in ("done", "reused") or results is None
        status = saved or "pending" if recorded else "done"
        records[spec.id] = Record(
            spec,
            status=status,
            results=results if results is not None else run.get("results"),
            error=run.get("error"),
            seconds=run.get("seconds") if recorded else None,
            pretrained_from=run.get("pretrained_from"),
            command=run.get("command", []),
            log_dir=log_dir(out, spec),
        )
    if damaged:
        for line in damaged:
            print(f"error: {line}", file=sys.stderr)
        raise UsageError(f"{len(damaged)} run(s) have damaged files; the report was not rewritten")
    for kind, path in write_reports(out, experiment, meta, records, meta["datasets"]).items():
        if path is not None:
            print(f"  {kind}: {path}")


def _check_runs_json(path: Path, saved: object) -> None:
    """runs.json as --report-only reads it: an object whose ``runs`` are objects with an ``id``."""
    if not isinstance(saved, dict):
        raise UsageError(
            f"{path} holds a JSON {type(saved).__name__}, not the object runs.json is; "
            "restore it from git or delete it (the runs' own files are enough)"
        )
    runs = saved.get("runs", [])
    if not isinstance(runs, list) or not all(isinstance(r, dict) and isinstance(r.get("id"), str) for r in runs):
        raise UsageError(f"{path}: 'runs' is not a list of runs with an 'id' each; restore it from git or delete it")
    kind: type | tuple[type, ...]
    for key, kind in (
        ("budget", str),
        ("datasets", list),
        ("lrs", (list, type(None))),
        ("pretrain_lrs", (list, type(None))),
        ("experiment", str),
    ):
        if key in saved and not isinstance(saved[key], kind):
            raise UsageError(f"{path}: {key!r} is {saved[key]!r}, of the wrong type; restore it from git or delete it")
    for run in runs:
        for key, kind in (
            ("results", (dict, type(None))),
            ("seconds", (int, float, type(None))),
            ("command", list),
            ("status", str),
        ):
            if key in run and not isinstance(run[key], kind):
                raise UsageError(
                    f"{path}: run {run['id']}'s {key!r} is of the wrong type; restore it from git or delete it"
                )


def _counts(records: dict[str, Record]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records.values():
        counts[record.status] = counts.get(record.status, 0) + 1
    return counts
