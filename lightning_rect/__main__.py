"""``lightning-rect`` / ``python -m lightning_rect``: the command's four parts.

- ``reproduce <experiment>``: the paper's experiments (``lightning_rect.reproduce``);
- ``configs [DIR]``: write the bundled configs and callback presets out (``lightning_rect.app.bundled``);
- ``plot RUN_FOLDER [...] [-o OUT.png]``: a run's summary figure, or several runs overlaid
  (``lightning_rect.app.plots``);
- everything else (``fit``, ``validate``, ``test``, ``predict``): the LightningCLI (``lightning_rect.app.cli``).
"""

import sys


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else None
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
        from lightning_rect.app.cli import main as cli_main

        cli_main()


if __name__ == "__main__":
    main()
