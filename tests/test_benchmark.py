import importlib.util
import re

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_throughput_benchmark_prints_every_ratio(capsys, monkeypatch):
    # a tiny run in this process: the figures mean nothing here, only that the script runs and
    # reports all of them (7 batches: 5 of warm-up, 2 timed)
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # as `python benchmarks/throughput.py` has it
    spec = importlib.util.spec_from_file_location("throughput", ROOT / "benchmarks" / "throughput.py")
    throughput = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(throughput)
    throughput.main(["--repeats", "1", "--steps", str(throughput.WARMUP + 2), "--batch-sizes", "10"])
    out = capsys.readouterr().out
    [row] = [line for line in out.splitlines() if line.startswith("| 10 |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    bare, with_monitor, without_monitor, ratio, monitor_cost, alone, alone_ratio = cells[1:8]
    assert float(bare) > 0 and float(with_monitor) > 0 and float(without_monitor) > 0 and float(alone) > 0
    assert re.fullmatch(r"\d\.\d{3} \(one repeat\)", ratio)
    assert re.fullmatch(r"\d\.\d{3} \(one repeat\)", alone_ratio)
    assert monitor_cost.endswith("%")
