"""The compatibility matrix: Lightning's contracts (rows) against this package's parts (columns).

``matrix.py`` declares every cell's expected outcome; ``cells.py`` holds the check of each cell;
``run_cells.py`` and ``ddp_cells.py`` run them from the installed wheel and print JSON;
``tests/test_compat_matrix.py`` builds the wheel, runs them and compares. The README's
"Compatibility matrix" table is ``python -m tests.compat.matrix --markdown``.
"""
