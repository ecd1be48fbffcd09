"""Integrations with tools outside Lightning: ``wandb`` (config once, ``results.json`` as the run summary)."""
