"""The training loop and evaluation of a run."""
