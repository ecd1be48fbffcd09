"""The compatibility matrix's ``ddp`` row in one launch of 2 CPU processes.

    PYTHONPATH=<wheel's --target dir> COMPAT_WORKDIR=<folder> COMPAT_SHARED=<folder> \\
        python tests/compat/ddp_cells.py results.json

The first ``Trainer(strategy="ddp")`` makes Lightning run this script again as the second process
(``LOCAL_RANK=1``); both then run the same cells in the same order, each cell's Trainer calls joining
the one process group. Rank 0 writes the outcomes. The CLI's cell comes last: its ``main`` closes the
process group when it returns.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ORDER = ["mlp", "handoff", "monitor", "dae", "cli"]


def main() -> None:
    out = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else None  # the second process is started without it
    import matrix
    import run_cells

    workdir = Path(os.environ["COMPAT_WORKDIR"]).resolve() / f"rank{os.environ.get('LOCAL_RANK', '0')}"
    run_cells.prepare()
    import cells as checks

    checks.dae_checkpoint()  # before the first DDP Trainer: a plain Trainer writes it, in each process
    results = {}
    for cell in sorted(matrix.cells_of("ddp"), key=lambda cell: ORDER.index(cell.column.id)):
        results[cell.id] = run_cells.run_cell(cell, checks, workdir)
        if checks.rank() == 0 and out is not None:
            run_cells.write(out, results)


if __name__ == "__main__":
    main()
