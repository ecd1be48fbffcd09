"""Runs a plan: reuses finished runs, trains the rest one ``fit`` at a time (or N at once), shows progress.

Why a child process per run (the default): each ``fit`` starts from a fresh interpreter, so no
global state (seeds, thread pools, CUDA memory, logging handlers, registered hooks) leaks from one
run into the next; a crash or an out-of-memory kill fails one run, not the reproduction; the
child's thread count is set before torch starts (``OMP_NUM_THREADS``); and ``--parallel N`` is
just N children. The price is an interpreter and import start per run (a few seconds;
benchmarks/README.md), which matters only for tiny runs: ``--in-process`` runs them in this
process instead (the tests use it).

Layout of ``<out>/runs/<run id>/``: ``version_0/`` (CSV metrics, ``config.yaml``, ``checkpoints/``,
``results.json``), ``output.log`` (everything the run printed), ``spec.json`` and ``inputs.json``.
A run counts as finished when its ``results.json`` exists, and is reused when its ``inputs.json``
matches the current data, config file and package version (``inputs``); a run stopped half-way
resumes from its ``last.ckpt`` on the same inputs, and starts again on others.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import yaml

from lightning_rect.app.results import epoch_of_run
from lightning_rect.app.run_lock import held_by
from lightning_rect.files import write_atomically
from lightning_rect.reproduce.budgets import DATASETS
from lightning_rect.reproduce.fast_path import FUSED_SGD, fused_sgd_holds
from lightning_rect.reproduce.inputs import differences, read_inputs, run_inputs, write_inputs
from lightning_rect.reproduce.plan import RunSpec
from lightning_rect.reproduce.probe import effective_config
from lightning_rect.reproduce.progress import PREFIX
from lightning_rect.reproduce.run_files import RunFileError, check_against_metrics
from lightning_rect.reproduce.run_files import read_results as read_checked_results

#: glibc malloc settings for the runs' processes (unless the environment sets its own): tensors up to
#: 16 MiB come from the heap instead of fresh mmaps, and up to 256 MiB of freed heap is kept, so the
#: same buffers freed and taken again at every step are not unmapped and faulted in again
#: (benchmarks/README.md, "parallel_runs.py"). Only the children get them; nothing in this process.
MALLOC_TUNABLES = "glibc.malloc.trim_threshold=268435456:glibc.malloc.mmap_threshold=16777216"

#: Seconds a child has to save and exit after it was told to stop (SIGTERM) before it is killed.
STOP_GRACE_SECONDS = 120

#: Final states of a run. ``reused``: finished by an earlier invocation; ``other shard``: left to
#: another ``--shard``; ``blocked``: its pre-training failed or is missing; ``damaged``: its
#: finished files cannot be read or disagree (``run_files``), so it is left exactly as it is.
FINAL = ("done", "reused", "failed", "blocked", "other shard", "interrupted", "damaged")


#: Why a finished pre-training run trains again although nothing changed, and the file that marks it
#: in the run's folder while it does.
CHECKPOINT_GONE = "its checkpoint is gone and an unfinished fine-tuning run starts from it"
REGENERATING = "regenerating"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class Options:
    out: Path
    configs_dir: Path
    data_dir: Path | None = None
    in_process: bool = False
    parallel: int = 1
    threads: int = 1
    shard: tuple[int, int] | None = None
    verbose: bool = False
    wandb_project: str | None = None
    experiment: str = ""
    fused_sgd: bool = True  # the in-place SGD step wherever it holds (fast_path.py); --plain-sgd: off


@dataclass
class Record:
    """What happened to one run; ``results`` is its ``results.json``; ``changed``: why a finished
    run trains again (what differs from the inputs it was made from)."""

    spec: RunSpec
    status: str = "pending"
    results: dict[str, Any] | None = None
    error: str | None = None
    seconds: float | None = None
    pretrained_from: str | None = None
    command: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    log_dir: Path | None = None  # where its results.json and metrics.csv are (or will be)

    @property
    def finished(self) -> bool:
        return self.results is not None

    def result(self, key: str) -> Any:
        """``results[key]`` of a finished run; None before it finished (or where its results hold none)."""
        return self.results.get(key) if self.results is not None else None

    def to_json(self, out: Path) -> dict[str, Any]:
        """The record as runs.json keeps it: paths relative to the output folder or to the working folder
        (the repository, for the committed reproductions), so the file reads the same on every machine."""
        error = self.error.replace(f"{Path.cwd()}/", "") if self.error else self.error
        return {
            **self.spec.to_json(),
            "status": self.status,
            "error": error,
            "seconds": self.seconds,
            "pretrained_from": portable_path(self.pretrained_from) if self.pretrained_from else None,
            "log_dir": log_dir(Path("."), self.spec).as_posix(),
            "command": portable_command(self.command),
            "results": portable_results(self.results),
        }


def run_dir(out: Path, spec: RunSpec) -> Path:
    return out / "runs" / spec.id


def log_dir(out: Path, spec: RunSpec) -> Path:
    return run_dir(out, spec) / "version_0"


def read_results(out: Path, spec: RunSpec) -> dict | None:
    """A finished run's results.json, checked against its metrics.csv; None when it has not finished;
    ``RunFileError`` (one line naming the file and the field) when either is damaged."""
    folder = log_dir(out, spec)
    results = read_checked_results(folder)
    if results is not None:
        check_against_metrics(folder, results)
    return results


def portable_path(path: str | Path) -> str:
    """``path`` relative to the working folder when it lies inside it (or beside it: ``../shared/data``),
    so that what a run records does not name the machine it ran on."""
    path = Path(path)
    if not path.is_absolute():
        return path.as_posix()
    relative = Path(os.path.relpath(path, Path.cwd()))
    return relative.as_posix() if relative.parts[:2] != ("..", "..") else path.as_posix()


def portable_results(results: dict[str, Any] | None) -> dict[str, Any] | None:
    """A results.json as runs.json keeps it: the checkpoint relative to the run's folder."""
    recorded = (results or {}).get("checkpoint")
    if results is None or not recorded or not Path(recorded).is_absolute() or "/version_0/" not in recorded:
        return results
    return {**results, "checkpoint": recorded.rpartition("/version_0/")[2]}


def portable_command(command: list[str]) -> list[str]:
    """A run's command line as a user would type it in the working folder: ``python`` for this
    interpreter, paths relative to the working folder (``portable_path``)."""
    cwd = str(Path.cwd())
    words = []
    for word in command:
        if word == sys.executable:
            words.append("python")
            continue
        key, eq, value = word.partition("=")
        if word.startswith("/"):
            words.append(portable_path(word))
        elif eq and value.startswith("/"):
            words.append(f"{key}={portable_path(value)}")
        else:
            words.append(word.replace(cwd + "/", ""))
    return words


def format_value(value: Any) -> str:
    """A value as jsonargparse reads it on the command line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def best_of(records: list[Record]) -> Record | None:
    """The finished record with the lowest validation score (``best_val``: val/err or val/recon)."""
    scored = [r for r in records if finite(r.result("best_val"))]
    return min(scored, key=lambda r: r.result("best_val")) if scored else None


def finite(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and math.isfinite(value)


def checkpoint_made_relative(folder: Path, results: dict[str, Any]) -> dict[str, Any]:
    """A reproduction run's results.json with its checkpoint named relative to the run's folder
    (``checkpoints/best-epoch=E.ckpt``), as the repository keeps it: no path of this machine."""
    recorded = results.get("checkpoint")
    if not recorded or not Path(recorded).is_absolute():
        return results
    try:
        relative = Path(recorded).resolve().relative_to(folder.resolve())
    except ValueError:
        return results
    results = {**results, "checkpoint": relative.as_posix()}
    write_atomically(folder / "results.json", json.dumps(results, indent=2) + "\n")
    return results


def checkpoint_of(out: Path, record: Record) -> Path | None:
    """The best checkpoint of a finished run: its recorded path (relative ones from the run's folder);
    looked up in its own folder when that is stale (results copied from another machine, or an
    output folder that was moved)."""
    recorded = record.results.get("checkpoint") if record.results else None
    if not recorded:
        return None
    path = Path(recorded)
    if not path.is_absolute():
        path = log_dir(out, record.spec) / path
    if path.is_file():
        return path
    found = sorted(run_dir(out, record.spec).rglob(path.name))
    return found[0] if found else None


def shards(specs: list[RunSpec], count: int) -> dict[str, int]:
    """Shard of each run: runs linked through ``needs`` stay together (a fine-tuning run needs its
    pre-training on the same machine); the groups, in plan order, are dealt out round-robin."""
    parent = {s.id: s.id for s in specs}

    def root(i: str) -> str:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for spec in specs:
        for need in spec.needs:
            parent[root(need)] = root(spec.id)
    order: dict[str, int] = {}
    for spec in specs:
        order.setdefault(root(spec.id), len(order))
    return {s.id: order[root(s.id)] % count for s in specs}


class Runner:
    def __init__(self, options: Options, on_change: Callable[[dict[str, Record]], object] | None = None) -> None:
        self.o = options
        self.on_change = on_change or (lambda records: None)
        self._print_lock = threading.Lock()
        self._started = 0
        self._to_train = 0
        self._procs: dict[str, subprocess.Popen] = {}
        self._stopping = False  # told to stop: no retry, no new run
        self._data_dirs: dict[str, Path] = {}
        self._configs: dict[str, dict[str, Any]] = {}
        # Captured now: while a run trains in this process, sys.stdout is redirected into its log.
        self._console = sys.stdout

    # -- output ----------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        with self._print_lock:
            print(text, file=self._console, flush=True)

    # -- planning state ----------------------------------------------------------------------------
    def prepare(self, specs: list[RunSpec]) -> dict[str, Record]:
        """Records for the plan: finished runs made from the current inputs are ``reused`` (a
        fine-tuning run only with all of its pre-training), other shards' runs set aside."""
        shard_of = shards(specs, self.o.shard[1]) if self.o.shard else {}
        records: dict[str, Record] = {}
        for spec in specs:  # a plan lists pre-training runs before the runs that need them
            record = Record(spec, command=self.command(spec))
            try:
                results = read_results(self.o.out, spec)
                recorded = read_inputs(run_dir(self.o.out, spec)) if results is not None else None
            except RunFileError as err:
                record.status, record.error, record.log_dir = "damaged", str(err), log_dir(self.o.out, spec)
                records[spec.id] = record
                continue
            if results is not None:
                record.changed = differences(recorded, self.inputs(spec))
                retrained = [
                    n
                    for n in spec.needs
                    if n in records
                    and records[n].status != "reused"
                    and not (run_dir(self.o.out, records[n].spec) / REGENERATING).exists()
                ]
                if retrained and not record.changed:
                    record.changed = ["its pre-training trains again"]
                if not record.changed:
                    record.results, record.status = results, "reused"
            marker = run_dir(self.o.out, spec) / REGENERATING
            if results is None and marker.is_file():  # stopped while training again for its checkpoint
                try:
                    record.results, record.changed = json.loads(marker.read_text()), [CHECKPOINT_GONE]
                except ValueError:
                    pass
            if record.status == "pending" and self.o.shard and shard_of[spec.id] != self.o.shard[0]:
                record.status = "other shard"
            record.log_dir = log_dir(self.o.out, spec)
            records[spec.id] = record
        self._regenerate_missing_checkpoints(records)
        return records

    def _regenerate_missing_checkpoints(self, records: dict[str, Record]) -> None:
        """A finished pre-training run whose checkpoint is gone (results committed without it, or
        copied from another machine) trains again only when a fine-tuning run still to train starts
        from it; the fine-tuning runs that finished from it stay finished."""
        for record in records.values():
            if record.status != "pending" or not record.spec.needs:
                continue
            best = best_of([records[n] for n in record.spec.needs])
            if best is not None and best.status == "reused" and checkpoint_of(self.o.out, best) is None:
                best.status, best.changed = "pending", [CHECKPOINT_GONE]  # its results stay until it has new ones

    def data_dir(self, spec: RunSpec) -> Path | None:
        """The folder a run reads its data from: --data-dir, else its config's (relative to here)."""
        if not DATASETS[spec.dataset].uses_data_dir:
            return None
        if self.o.data_dir is not None:
            return self.o.data_dir
        if spec.config not in self._data_dirs:
            config = yaml.safe_load((self.o.configs_dir / spec.config).read_text()) or {}
            folder = ((config.get("data") or {}).get("init_args") or {}).get("data_dir", "data")
            self._data_dirs[spec.config] = Path(folder).resolve()
        return self._data_dirs[spec.config]

    def inputs(self, spec: RunSpec) -> dict[str, Any]:
        return run_inputs(spec, self.effective_config(spec), self.data_dir(spec), self.execution(spec))

    def effective_config(self, spec: RunSpec) -> dict[str, Any]:
        """The run's config file with its settings set (read once per run)."""
        if spec.id not in self._configs:
            config = yaml.safe_load((self.o.configs_dir / spec.config).read_text()) or {}
            self._configs[spec.id] = effective_config(config, spec.settings)
        return self._configs[spec.id]

    def execution(self, spec: RunSpec) -> dict[str, Any]:
        """Settings of how a run trains, not what (not in its id): the fast SGD step where it holds."""
        holds = self.o.fused_sgd and fused_sgd_holds(self.effective_config(spec))
        return {FUSED_SGD: True} if holds else {}

    def command(self, spec: RunSpec, pretrained: Path | None = None, resume: Path | None = None) -> list[str]:
        """The ``fit`` command line of a run (what a user or scheduler could run by hand)."""
        # Paths relative to the working folder where they lie in or beside it: the run's saved config.yaml
        # (committed for the reproductions) then names no folder of this machine.
        args = [
            sys.executable,
            "-m",
            "lightning_rect",
            "fit",
            "--config",
            portable_path(self.o.configs_dir / spec.config),
        ]
        args += [f"--{key}={format_value(value)}" for key, value in {**spec.settings, **self.execution(spec)}.items()]
        out_runs = portable_path((self.o.out / "runs").resolve())
        csv = {
            "class_path": "lightning_rect.app.loggers.CSVLogger",  # keeps metrics.csv across --ckpt_path
            "init_args": {"save_dir": str(out_runs), "name": spec.id, "version": 0},
        }
        loggers: Any = csv
        if self.o.wandb_project:
            loggers = [
                csv,
                {
                    "class_path": "lightning.pytorch.loggers.WandbLogger",
                    "init_args": {
                        "project": self.o.wandb_project,
                        "name": spec.id,
                        "group": self.o.experiment,
                        "save_dir": str(Path(out_runs) / spec.id),
                    },
                },
            ]
        args += [
            f"--trainer.logger={json.dumps(loggers)}",
            # with several loggers Lightning puts checkpoints under default_root_dir
            f"--trainer.default_root_dir={out_runs}/{spec.id}",
            "--trainer.enable_progress_bar=false",
            "--trainer.callbacks+=lightning_rect.reproduce.progress.EpochLine",
        ]
        if self.o.data_dir is not None and DATASETS[spec.dataset].uses_data_dir:
            args.append(f"--data.init_args.data_dir={portable_path(self.o.data_dir)}")
        if spec.needs:
            start = portable_path(pretrained) if pretrained else "<best checkpoint of " + ", ".join(spec.needs) + ">"
            args.append(f"--model.init_args.pretrained={start}")
        if resume is not None:
            args.append(f"--ckpt_path={portable_path(resume)}")
        return args

    def _dependency(self, spec: RunSpec, records: dict[str, Record]) -> tuple[str, Path | None]:
        """("ready", checkpoint), ("wait", None) or ("blocked", None) for the run's pre-training."""
        if not spec.needs:
            return "ready", None
        candidates = [records[i] for i in spec.needs]
        if any(r.status not in FINAL for r in candidates):
            return "wait", None
        best = best_of(candidates)
        checkpoint = checkpoint_of(self.o.out, best) if best is not None else None
        return ("ready", checkpoint) if checkpoint is not None else ("blocked", None)

    # -- the schedule ------------------------------------------------------------------------------
    def execute(self, records: dict[str, Record]) -> dict[str, Record]:
        """Train every pending run, at most ``parallel`` at once, each when its pre-training is done.

        With one run at a time the run trains on this thread, so Ctrl-C reaches it directly.
        """
        todo = [r for r in records.values() if r.status == "pending"]
        self._to_train = len(todo)
        running: dict[Future, Record] = {}
        try:
            if self.o.parallel == 1:
                while (ready := self._next_ready(todo, records)) is not None:
                    self._train(*ready)
                    self.on_change(records)
            else:
                with ThreadPoolExecutor(max_workers=self.o.parallel) as pool:
                    try:
                        while True:
                            while len(running) < self.o.parallel and (ready := self._next_ready(todo, records)):
                                running[pool.submit(self._train, *ready)] = ready[0]
                            if not running:
                                break
                            finished, _ = wait(running, return_when=FIRST_COMPLETED)
                            for future in finished:
                                running.pop(future)
                                future.result()
                            self.on_change(records)
                    except BaseException:
                        # before the pool waits for its threads: they end when their children do
                        self.stop_children()
                        raise
        except KeyboardInterrupt:
            self.stop_children()
            for record in records.values():
                if record.status in ("running", "pending"):
                    record.status = "interrupted"
            self.on_change(records)
            raise
        for record in todo:  # waiting on a run that will not finish here
            self._block(record, "its pre-training did not finish")
        self.on_change(records)
        return records

    def stop_children(self) -> None:
        """Ask every running child to stop (SIGTERM: it ends its step and exits, its last checkpoint
        whole); the threads reading their output go on until they exit, so no child writes into a
        closed pipe."""
        self._stopping = True
        for proc in list(self._procs.values()):
            if proc.poll() is None:
                proc.terminate()

    def _next_ready(self, todo: list[Record], records: dict[str, Record]) -> tuple[Record, Path | None, int] | None:
        """Take the first run of ``todo`` whose pre-training is done (blocking those whose failed)."""
        if self._stopping:
            return None
        for record in list(todo):
            state, checkpoint = self._dependency(record.spec, records)
            if state == "blocked":
                todo.remove(record)
                self._block(record, "no finished pre-training run among " + ", ".join(record.spec.needs))
            elif state == "ready":
                todo.remove(record)
                record.status = "running"
                self._started += 1
                return record, checkpoint, self._started
        return None

    def _block(self, record: Record, why: str) -> None:
        record.status, record.error = "blocked", why
        self._started += 1
        self.say(f"[{self._started}/{self._to_train}] {record.spec.id}: blocked, {why}")

    # -- one run -------------------------------------------------------------------------------------
    def _train(self, record: Record, pretrained: Path | None, number: int) -> None:
        spec = record.spec
        tag = f"[{number}/{self._to_train}]"
        folder = run_dir(self.o.out, spec)
        holder = held_by(log_dir(self.o.out, spec))
        if holder is not None:  # another process writes there: neither resume nor delete under it
            record.status, record.error = "failed", f"its folder is in use by {holder}; left alone"
            self.say(f"{tag} {spec.id}: {record.error}")
            return
        inputs = self.inputs(spec)
        try:
            changed = differences(read_inputs(folder), inputs)
            same_inputs = not changed
            finished = read_results(self.o.out, spec) if same_inputs and not record.changed else None
        except RunFileError as err:
            record.status, record.error = "damaged", str(err)
            self.say(f"{tag} {spec.id}: {err}")
            return
        if finished is not None:  # finished meanwhile, by another process or machine
            record.results, record.status = finished, "reused"
            self.say(f"{tag} {spec.id}: finished meanwhile elsewhere, reused")
            return
        last = sorted(folder.rglob("last.ckpt")) if folder.exists() and same_inputs else []
        resume = last[0] if last else None
        if resume is None and folder.exists():
            if changed and any(folder.rglob("last.ckpt")):  # say why a half-done run is not picked up
                self.say(f"{tag} {spec.id}: its checkpoint is not resumed, {changed[0]}; starting again")
            shutil.rmtree(folder)  # no checkpoint to go on from, or one made from other inputs: start clean
        self._start_folder(folder, spec, inputs)
        if CHECKPOINT_GONE in record.changed:
            # trained again for its checkpoint only: the fine-tuning runs that finished from it stay
            # finished, also when this training is stopped half-way and picked up by a later invocation
            # (the file holds its results until it has new ones)
            (folder / REGENERATING).write_text(json.dumps(record.results) + "\n")
        record.pretrained_from = str(pretrained) if pretrained else None
        what = (
            f"{spec.dataset} {spec.phase} {spec.cell.activation}"
            + (" from pre-training" if spec.needs else "")
            + f" ({spec.id})"
        )
        self.say(f"{tag} {what}" + (f": resuming from {resume}" if resume else ""))
        started = time.perf_counter()
        ok, error = self._attempt(record, pretrained, resume, tag)
        if not ok and self._stopping:  # stopped, not failed: it resumes from its last checkpoint next time
            record.status, record.error = "interrupted", error
            record.seconds = round(time.perf_counter() - started, 1)
            return
        if not ok and resume is not None and (holder := held_by(log_dir(self.o.out, spec))) is not None:
            error = f"its folder is in use by {holder}; left alone"
        elif not ok and resume is not None:
            self.say(f"{tag} resuming failed ({error}); starting this run again from scratch")
            shutil.rmtree(folder)
            self._start_folder(folder, spec, inputs)
            ok, error = self._attempt(record, pretrained, None, tag)
        record.seconds = round(time.perf_counter() - started, 1)
        try:
            record.results = read_results(self.o.out, spec) if ok else None
        except RunFileError as err:
            ok, error, record.results = False, str(err), None
        if record.results is not None:  # finished
            (folder / REGENERATING).unlink(missing_ok=True)
            record.results = checkpoint_made_relative(log_dir(self.o.out, spec), record.results)
            # again, after the run: a run that downloaded its data has now seen the files it read
            write_inputs(folder, self.inputs(spec))
            record.status, record.error = "done", None
            self.say(f"{tag} done in {duration(record.seconds)}: {summary(record.results)}")
        else:
            record.status, record.error = "failed", error or "no results.json written"
            self.say(f"{tag} FAILED after {record.seconds:.0f} s: {record.error} (log: {folder / 'output.log'})")

    @staticmethod
    def _start_folder(folder: Path, spec: RunSpec, inputs: dict[str, Any]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "spec.json").write_text(json.dumps(spec.to_json(), indent=2) + "\n")
        write_inputs(folder, inputs)

    def _attempt(
        self, record: Record, pretrained: Path | None, resume: Path | None, tag: str
    ) -> tuple[bool, str | None]:
        record.command = self.command(record.spec, pretrained, resume)
        log_path = run_dir(self.o.out, record.spec) / "output.log"
        with open(log_path, "a") as log:
            log.write("$ " + shlex.join(record.command) + "\n")
            log.flush()
            echo = LineEcho(log, tag, self)
            if self.o.in_process:
                code = self._in_process(record.command[3:], echo)
            else:
                code = self._subprocess(record, echo)
            echo.close()
        ok = code == 0 and (log_dir(self.o.out, record.spec) / "results.json").is_file()
        return ok, None if ok else echo.error_line(code)

    def _subprocess(self, record: Record, echo: LineEcho) -> int:
        threads = str(self.o.threads)
        env = {
            "GLIBC_TUNABLES": MALLOC_TUNABLES,
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
        }
        proc = subprocess.Popen(
            record.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=env,
            errors="replace",
        )
        self._procs[record.spec.id] = proc
        stdout = proc.stdout
        assert stdout is not None  # stdout=PIPE
        try:
            for line in stdout:
                echo.line(line)
            return proc.wait()
        except BaseException:  # Ctrl-C or SIGTERM here: stop the child, and read it to its end
            proc.terminate()
            killer = threading.Timer(STOP_GRACE_SECONDS, proc.kill)
            killer.start()
            try:
                for line in stdout:
                    echo.line(line)
                proc.wait()
            finally:
                killer.cancel()
            raise
        finally:
            stdout.close()  # the pipe's file, read to its end: not left to the garbage collector
            self._procs.pop(record.spec.id, None)

    def _in_process(self, args: list[str], echo: LineEcho) -> int:
        import torch

        from lightning_rect.app.cli import RectCLI, user_error

        torch.set_num_threads(self.o.threads)
        # LightningCLI(args=...) warns when sys.argv holds arguments too (ours: the reproduce command).
        with (
            contextlib.redirect_stdout(echo),
            contextlib.redirect_stderr(echo),
            _lightning_logs_to(echo),
            _patched_argv([sys.argv[0]]),
        ):
            try:
                RectCLI(args=args)
            except KeyboardInterrupt:
                raise
            except SystemExit as err:  # the argument parser exits on a bad setting
                return err.code if isinstance(err.code, int) else 2
            except Exception as err:  # noqa: BLE001 - one failed run must not end the reproduction
                cause = user_error(err)
                echo.line(f"error: {cause if cause is not None else f'{type(err).__name__}: {err}'}\n")
                return 1
        return 0


@contextlib.contextmanager
def _patched_argv(argv: list[str]):
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


@contextlib.contextmanager
def _lightning_logs_to(stream):
    """Point Lightning's log handlers (bound to the real stderr when Lightning was imported) at
    ``stream`` for the duration of an in-process run, so its messages land in the run's log."""
    handlers = {
        id(h): h
        for name in ("lightning.pytorch", "lightning.fabric", "lightning")
        for h in logging.getLogger(name).handlers
        if isinstance(h, logging.StreamHandler)
    }
    # The streams themselves, not setStream's return value: that is None when the stream is unchanged.
    previous = {key: h.stream for key, h in handlers.items()}
    for handler in handlers.values():
        handler.setStream(stream)
    try:
        yield
    finally:
        for key, handler in handlers.items():
            handler.setStream(previous[key])


class LineEcho(io.TextIOBase):
    """Writes a run's output to its log, and shows the ``EpochLine`` progress lines (all lines with
    ``--verbose``) on the console with the run's ``[i/n]`` tag."""

    def __init__(self, log, tag: str, runner: Runner) -> None:
        self.log, self.tag, self.runner = log, tag, runner
        self._partial = ""
        self.tail: list[str] = []

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self.line(line + "\n")
        return len(text)

    def line(self, line: str) -> None:
        self.log.write(line)
        text = line.rstrip("\n")
        if text.strip():
            self.tail = (self.tail + [text])[-40:]
        if text.startswith(PREFIX):
            self.runner.say(f"{self.tag} {text[len(PREFIX) :]}")
        elif self.runner.o.verbose and text.strip():
            self.runner.say(f"{self.tag}   {text}")

    def flush(self) -> None:
        self.log.flush()

    def close(self) -> None:
        if self._partial:
            self.line(self._partial + "\n")
            self._partial = ""
        self.log.flush()

    def error_line(self, code: int | None) -> str:
        """The line that says why a run failed: its ``error:`` line, else its last line."""
        for text in reversed(self.tail):
            if text.startswith("error:") or "Error:" in text:
                return text.strip()
        last = self.tail[-1].strip() if self.tail else ""
        return f"exit status {code}" + (f": {last}" if last else "")


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def summary(results: dict) -> str:
    """One line: test error and sparsity (classifier) or test reconstruction (DAE)."""
    parts = []
    if finite(results.get("test/err")):
        parts.append(f"test error {100 * results['test/err']:.2f}%")
    sparsity = results.get("test/sparsity/mean")
    if finite(sparsity):
        parts.append(f"sparsity {100 * sparsity:.1f}%")
    if finite(results.get("test/recon")):
        parts.append(f"test reconstruction {results['test/recon']:.4g}")
    if results.get("best_epoch") is not None:
        parts.append(epoch_of_run(results["best_epoch"], results.get("epochs")))
    return ", ".join(parts) or "finished"
