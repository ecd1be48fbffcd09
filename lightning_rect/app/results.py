"""What a finished ``fit`` leaves behind: ``results.json``, the printed summary, and epoch numbering.

The CLI writes these; ``lightning_rect.reproduce`` reads them back for its reports. Epochs are
numbered from 0 everywhere, as Lightning numbers them in the progress bar and in checkpoint names.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from lightning_rect.files import write_atomically

RESULTS_FILE = "results.json"


def write_results(results: dict, log_dir: str | Path | None) -> Path:
    """Write ``results`` atomically (a reader never sees half a file) and print the summary."""
    out = Path(log_dir or ".") / RESULTS_FILE
    write_atomically(out, json.dumps(results, indent=2) + "\n")
    print(format_summary(results, out))
    return out


def read_results(log_dir: str | Path) -> dict | None:
    """The ``results.json`` of a run folder, or None when the run has not finished."""
    try:
        return json.loads((Path(log_dir) / RESULTS_FILE).read_text())
    except (OSError, ValueError):
        return None


def format_summary(results: dict, path: Path) -> str:
    def pct(key: str) -> str:
        value = results.get(key)
        return f"{100 * value:.2f}%" if isinstance(value, float) and math.isfinite(value) else "-"

    best = results["best_val"]
    lines = [
        f"results ({results['model']} on {results['data']}) -> {path}",
        f"  best {results['selection_metric']}: {best:.4g}" if isinstance(best, float) else "  best: -",
        f"  ({epoch_of_run(results['best_epoch'], results['epochs'])}, fit time {results['fit_seconds']:.1f} s)",
    ]
    if "test/err" in results:
        rmse = f"   test RMSE: {results['test/rmse']:.4f}" if "test/rmse" in results else ""
        lines.append(f"  test error: {pct('test/err')}{rmse}   test sparsity: {pct('test/sparsity/mean')}")
    else:
        lines.append("  test: " + ", ".join(f"{k}={v:.4g}" for k, v in results.items()
                                           if k.startswith("test/") and isinstance(v, float)))
    dead = [f"layer {k.split('/')[1].removeprefix('layer_')} {100 * v:.1f}%" for k, v in results.items()
            if k.startswith("pretrain/layer_") and k.endswith("/dead") and isinstance(v, float)]
    if dead:
        lines.append("  dead units after each layer's pre-training: " + ", ".join(dead))
    return "\n".join(lines)


def epoch_of_run(best_epoch: int | None, epochs: int | None) -> str:
    """'best epoch 27 of 0-29': numbered from 0, as in the progress bar and ``best-epoch=27.ckpt``."""
    best = "-" if best_epoch is None else str(best_epoch)
    return f"best epoch {best} of 0-{epochs - 1}" if epochs else f"best epoch {best}"


def epoch_of_checkpoint(path: str | None) -> int | None:
    """The epoch in a checkpoint name such as ``best-epoch=12.ckpt``."""
    match = re.search(r"epoch=(\d+)", Path(path).name) if path else None
    return int(match.group(1)) if match else None


def to_float(value: object) -> float | None:
    return None if value is None else float(value.item() if hasattr(value, "item") else value)
