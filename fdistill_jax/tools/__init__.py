"""Command-line tools (run with python -m fdistill_jax.tools.<name>)."""
