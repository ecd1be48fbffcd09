"""The paper's learning-rate grid: one definition, for the library's advice (``DivergenceGuard``)
and for the reproductions' search (``lightning_rect.reproduce.budgets``)."""

#: The paper's learning rates, in both phases; it keeps the one with the best validation score
#: (docs/paper.md#pre-training, docs/paper.md#fine-tuning).
PAPER_LRS = (0.1, 0.01, 0.001, 0.0001)
