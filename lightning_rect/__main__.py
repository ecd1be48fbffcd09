"""``lightning-rect`` / ``python -m lightning_rect``: the command's four parts.

- ``reproduce <experiment>``: the paper's experiments (``lightning_rect.reproduce``);
- ``configs [DIR]``: write the bundled configs and callback presets out (``lightning_rect.app.bundled``);
- ``plot RUN_FOLDER [...] [-o OUT.png]``: a run's summary figure, or several runs overlaid
  (``lightning_rect.app.plots``);
- everything else (``fit``, ``validate``, ``test``, ``predict``): the LightningCLI (``lightning_rect.app.cli``).

Running out of memory (torch cannot even be imported under a low ``ulimit -v``, or an allocation fails)
is one line naming the limit and the fix, exit code 2, not a traceback.
"""

import errno
import sys

#: Words of the errors that mean "no memory" when a shared library is mapped or a tensor allocated.
OUT_OF_MEMORY = ("failed to map segment", "cannot allocate memory", "can't allocate memory", "out of memory")


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else None
    try:
        run(command)
    except (MemoryError, ImportError, OSError, RuntimeError) as err:
        if not out_of_memory(err):
            raise
        print(f"error: {memory_line(err, command)}", file=sys.stderr)
        sys.exit(2)


def run(command: str | None) -> None:
    if command == "reproduce":
        from lightning_rect.reproduce import main as reproduce_main

        reproduce_main(sys.argv[2:])
    elif command == "configs":
        from lightning_rect.app.bundled import main as configs_main

        configs_main(sys.argv[2:])
    elif command == "plot":
        from lightning_rect.app.plots.command import main as plot_main

        plot_main(sys.argv[2:])
    else:
        from lightning_rect.app.threads import set_wait_policy

        set_wait_policy()  # before torch is imported (app/threads.py: measured)
        from lightning_rect.app.cli import main as cli_main

        cli_main()


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) is the system refusing memory."""
    seen = set()
    exc: BaseException | None = err  # err, then what caused it, and so on
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM):
            return True
        if isinstance(exc, (ImportError, OSError, RuntimeError)) and any(w in str(exc).lower() for w in OUT_OF_MEMORY):
            return "cuda" not in str(exc).lower()  # a GPU's memory has its own error and fix
        exc = exc.__cause__ or exc.__context__
    return False


def memory_line(err: BaseException, command: str | None) -> str:
    """One line: what ran out, the address-space limit if one is set, and the fix."""
    what = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    limit = address_space_limit()
    if limit is not None:
        where = (
            f"this process may use at most {limit / 2**30:.1f} GB of address space (ulimit -v {limit // 1024}), "
            "and torch alone maps several GB; raise the limit (ulimit -v unlimited) and run it again"
        )
    else:
        where = "free some memory (or use smaller hidden_sizes, batch_size) and run it again"
    doing = f"lightning-rect {command}" if command else "lightning-rect"
    return f"{doing} ran out of memory ({type(err).__name__}: {what}); {where}"


def address_space_limit() -> int | None:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


if __name__ == "__main__":
    main()
