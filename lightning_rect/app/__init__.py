"""The application: the ``fit`` command line and what a run leaves on disk.

Nothing in the library (models, callbacks, data, the registry) imports this package. Modules:

- ``cli``: ``RectCLI`` (LightningCLI with sizes linked from the data, fit-then-test) and ``main``;
- ``user_errors``: the one-line messages the command prints instead of tracebacks;
- ``resume``: ``--ckpt_path last`` and what a resumed run keeps (config, history, learning rate);
- ``run_lock``: one process at a time in a run folder;
- ``checkpoint_io``: atomic checkpoint writes (a Trainer plugin) and the epoch-end ``last.ckpt``;
- ``loggers``: the CSV logger that claims a new run folder atomically and keeps its history on a resume;
- ``results``: ``results.json`` and the printed summary;
- ``plots``: ``summary.png`` and run comparisons; ``wandb``: Weights & Biases;
- ``bundled``: the configs and callback presets shipped inside the package.
"""
