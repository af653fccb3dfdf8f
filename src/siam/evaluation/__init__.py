"""Evaluation (paper Sec. 4.2, Tables 2 and 3): pure metrics, planted-truth recovery, reports.

* :mod:`~siam.evaluation.metrics`: RMSE, Kendall's tau-b, per-attribute AP, annotator agreement;
* :mod:`~siam.evaluation.planted`: recovery of what ``siam synth`` planted (what / where / how much);
* :mod:`~siam.evaluation.runner`: :func:`evaluate_model` over held-out data;
* :mod:`~siam.evaluation.report`: Markdown + JSON tables; ``siam evaluate`` in :mod:`.cli`.
"""
