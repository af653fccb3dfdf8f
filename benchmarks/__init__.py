"""Speed and memory benchmarks (not tests): ratios against a baseline measured in the same run.

Run everything with ``python -m benchmarks`` (a few minutes on 2 cores), or some of them with
``python -m benchmarks data inference``. See ``benchmarks/README.md`` for the latest figures.
"""
