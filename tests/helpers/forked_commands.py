"""Several ``python -m lightning_rect ...`` commands, each in a fork of this one interpreter, which has
imported torch and Lightning once (about 4.5 s of CPU per interpreter start-up, most of a short
command). Nothing of ``lightning_rect`` is imported before the fork, so each command imports the
package found first on its own path, as a fresh interpreter would.

    python tests/helpers/forked_commands.py SPEC.json

SPEC.json lists the commands: ``[{"cwd": ..., "path": [...], "args": [...], "output": ...}, ...]``;
``path`` goes in front of ``sys.path`` (as ``PYTHONPATH`` would), stdout and stderr go to ``output``.
All run at once; this exits 0 when every command exited 0. Each command's exit code is written to
``<output>.code``, and the file of the ``lightning_rect`` it imported to ``<output>.module``.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path

import lightning  # noqa: F401  (the start-up cost shared by every fork)
import torch  # noqa: F401


def run_command(command: dict) -> int:
    """In the forked child: the command as ``python -m lightning_rect`` would run it; its exit code."""
    os.chdir(command["cwd"])
    sys.path[:0] = [command["cwd"], *command["path"]]
    sys.argv = ["lightning_rect", *command["args"]]
    output = os.open(command["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(output, 1)
    os.dup2(output, 2)
    try:
        runpy.run_module("lightning_rect", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    with open(command["output"] + ".module", "w") as file:
        file.write(getattr(sys.modules.get("lightning_rect"), "__file__", "") or "")
    return code


def main(spec_file: str) -> int:
    commands = json.loads(Path(spec_file).read_text())
    children = {}
    for command in commands:
        pid = os.fork()
        if pid == 0:
            os._exit(run_command(command))  # no atexit of the parent's in the child
        children[pid] = command
    failed = 0
    while children:
        pid, status = os.wait()
        command = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        with open(command["output"] + ".code", "w") as file:
            file.write(str(code))
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
