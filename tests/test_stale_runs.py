"""Reuse follows the code's behaviour: in a copy of the package whose numerics were changed, exactly
the committed runs that change would train differently are stale (``reproduce --dry-run``); in a
copy that was only refactored, none is.

Four committed runs of Table 1 at the paper budget, chosen so that each change touches some and
spares others: the tanh DAE (no L1, masking noise), the rectifier DAE (L1 and masking noise), the
rectifier from random weights (L1, no noise) and tanh from random weights (neither).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

TANH_DAE = "mnist-pretrain-tanh-lr0.01-0dd6236c"
RECTIFIER_DAE = "mnist-pretrain-rectifier-lr0.01-431ff8d9"
RECTIFIER_L1 = "mnist-rectifier-nopre-lr0.03-a3726719"
TANH = "mnist-tanh-nopre-lr0.1-84c84386"
RUNS = (TANH_DAE, RECTIFIER_DAE, RECTIFIER_L1, TANH)


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path.name} no longer holds {old!r}: update this test's change"
    path.write_text(text.replace(old, new))


def weigh_l1_differently(package: Path) -> None:
    replace(
        package / "encoder.py",
        "sum(h.abs().sum() for h in hidden))",
        "2 * sum(h.abs().sum() for h in hidden))",
    )


def change_masking_noise(package: Path) -> None:
    replace(
        package / "noise.py",
        "return x * (self._draw(x, generator) >= self.level)",
        "return x * (self._draw(x, generator) >= 0.5 * self.level)",
    )


def change_data_order(package: Path) -> None:
    replace(
        package / "data" / "batches.py", "self.seed * 1_000_003 + self.epoch", "self.seed * 1_000_003 + self.epoch + 1"
    )


def break_the_fast_paths_bias_update(package: Path) -> None:
    """A fault only the in-place SGD step has (``reproduce`` trains and probes with it where it holds)."""
    replace(package / "fused_sgd.py", "bias.add_(grad_out.sum(0),", "bias.add_(grad_out.mean(0),")


def rename_and_move(package: Path) -> None:
    """``l1_penalty`` renamed everywhere, and ``noise.py`` moved to ``corruption.py``."""
    for path in package.rglob("*.py"):
        text = path.read_text()
        changed = re.sub(r"\bl1_penalty\b", "activation_l1", text).replace(
            "lightning_rect.noise", "lightning_rect.corruption"
        )
        if changed != text:
            path.write_text(changed)
    (package / "noise.py").rename(package / "corruption.py")


CHANGES = {  # change -> the runs it must make stale
    weigh_l1_differently: {RECTIFIER_DAE, RECTIFIER_L1},
    change_masking_noise: {TANH_DAE, RECTIFIER_DAE},
    change_data_order: set(RUNS),
    break_the_fast_paths_bias_update: set(RUNS),  # all four are plain SGD, so on the fast path
    rename_and_move: set(),
}


def dry_run(copy: Path) -> dict:
    """``reproduce --dry-run`` of the four runs by the package copy in ``copy`` (run from there, so
    the copy is the one imported) against the repository's committed run files, as a command for
    helpers/forked_commands.py."""
    args = [
        "reproduce",
        "table1",
        "--budget",
        "paper",
        "--datasets",
        "mnist",
        "--dry-run",
        "--only",
        *RUNS,
        "--out",
        str(ROOT / "reproductions" / "table1"),
        "--configs",
        str(ROOT / "configs"),
        "--data-dir",
        str(DATA),
    ]
    return {"cwd": str(copy), "path": [str(copy)], "args": args, "output": str(copy / "output.txt")}


def stale_runs(output: str) -> dict[str, str]:
    """Run id -> why it is stale, from --dry-run's listing."""
    stale, current = {}, None
    for line in output.splitlines():
        if match := re.match(r"\s+\[(\w[\w ]*)\] (\S+)$", line):
            current = match.group(2)
        elif current and (match := re.match(r"\s+stale: (.*)", line)):
            stale[current] = match.group(1)
    return stale


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "MNIST").is_dir(), reason=f"the committed runs' MNIST files are not in {DATA}")
def test_a_change_to_the_numerics_makes_exactly_the_runs_it_touches_stale_and_a_refactor_none(tmp_path):
    commands = {}
    for change in CHANGES:
        copy = tmp_path / change.__name__
        shutil.copytree(ROOT / "lightning_rect", copy / "lightning_rect", ignore=shutil.ignore_patterns("__pycache__"))
        change(copy / "lightning_rect")
        commands[change] = dry_run(copy)
    # one interpreter start-up for the five copies: each dry run is a fork that imports its own copy
    (tmp_path / "commands.json").write_text(json.dumps(list(commands.values())))
    subprocess.run(
        [sys.executable, str(ROOT / "tests" / "helpers" / "forked_commands.py"), str(tmp_path / "commands.json")],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    for change, expected in CHANGES.items():
        output = Path(commands[change]["output"]).read_text()
        assert Path(commands[change]["output"] + ".code").read_text() == "0", output[-3000:]
        assert Path(commands[change]["output"] + ".module").read_text().startswith(str(tmp_path / change.__name__))
        listed = re.findall(r"\s+\[\w[\w ]*\] (\S+)$", output, flags=re.M)
        assert set(listed) == set(RUNS), output[-3000:]
        stale = stale_runs(output)
        assert set(stale) == expected, (
            f"{change.__name__}: stale {sorted(stale)}, expected {sorted(expected)}\n{output[-3000:]}"
        )
        assert all("trains it differently" in why for why in stale.values()), stale
        assert f"{len(expected)} stale run(s), 0 damaged" in output


CONFIGS_DAE = "mnist-pretrain-rectifier-lr0.01-147677ae"  # Table 1's rectifier DAE, the configs' protocol


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "MNIST").is_dir(), reason=f"the committed runs' MNIST files are not in {DATA}")
def test_another_float_order_stays_within_the_tolerance_where_float32_would_not():
    """Two threads sum in another order, as another processor would: the float64 probe of the DAE
    whose top layer amplifies such differences still matches its committed record, while the same
    probe in float32 leaves the tolerance (which is why the probe trains in float64)."""
    import json

    import yaml

    from lightning_rect.reproduce.probe import RTOL, effective_config, probe_differences, run_probe

    inputs = json.loads((ROOT / "reproductions" / "table1" / "runs" / CONFIGS_DAE / "inputs.json").read_text())
    config = effective_config(
        yaml.safe_load((ROOT / "configs" / inputs["config"]["file"]).read_text()), inputs["settings"]
    )
    assert inputs["probe"]["precision"] == "64-true"
    assert probe_differences(inputs["probe"], run_probe(config, DATA, threads=2)) == []

    float32 = {**config, "trainer": {**(config.get("trainer") or {}), "precision": "32-true"}}
    one, two = run_probe(float32, DATA, threads=1), run_probe(float32, DATA, threads=2)
    assert probe_differences(one, two), "float32 now agrees across float orders: the float64 probe may be relaxed"
    worst = max(abs(a - b) / abs(a) for a, b in zip(one["losses"], two["losses"]))
    assert worst > RTOL
