"""``python -m lightning_rect``: ``reproduce`` goes to the experiment runner, everything else to the CLI."""

import sys


def main() -> None:
    if sys.argv[1:2] == ["reproduce"]:
        from lightning_rect.reproduce import main as reproduce_main

        reproduce_main(sys.argv[2:])
    else:
        from lightning_rect.cli import main as cli_main

        cli_main()


if __name__ == "__main__":
    main()
