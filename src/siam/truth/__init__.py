"""``siam truth``: are the explanations right? Planted-truth metrics over seeds, with measured
ceilings (oracle-f), controls (shuffled scores, cascading randomisation), a decorrelated test world
and FunnyBirds-style correctness. Entry point: :func:`siam.truth.run.truth` (``siam truth``)."""

from siam.truth.run import add_arguments, run, truth

__all__ = ["add_arguments", "run", "truth"]
