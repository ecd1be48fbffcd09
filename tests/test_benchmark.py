import re
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_throughput_benchmark_prints_every_ratio():
    # a tiny run: the figures mean nothing here, only that the script runs and reports all of them
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--repeats", "1", "--steps", "12",
         "--batch-sizes", "10"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    [row] = [line for line in out.splitlines() if line.startswith("| 10 |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    bare, with_monitor, without_monitor, ratio, monitor_cost, alone, alone_ratio = cells[1:8]
    assert float(bare) > 0 and float(with_monitor) > 0 and float(without_monitor) > 0 and float(alone) > 0
    assert re.fullmatch(r"\d\.\d{3} \(one repeat\)", ratio)
    assert re.fullmatch(r"\d\.\d{3} \(one repeat\)", alone_ratio)
    assert monitor_cost.endswith("%")
