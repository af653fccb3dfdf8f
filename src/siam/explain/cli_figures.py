"""``siam figures``: the model-level figures and the data behind them.

Always the template gallery (Fig. 4). With images (``--images``, or ``--data DIR`` in the
``siam synth`` layout, whose ``DIR/son`` ScenicOrNot split gives labelled images): the attribute
ranking, explanation panels (the largest errors when labelled), and with ``--baseline`` the
disagreement panels (Sec. 4.3); with ``--data`` also the co-occurrence plot (Fig. 3).

Writes ``OUT/figures/*.png``, ``OUT/report_data.json``, ``OUT/templates.npz``, ``OUT/panels/*.npz``.
Exit codes: 0 done; 1 done, but some images could not be read (one stderr line each);
2 bad arguments, checkpoint or data folder.
"""

from __future__ import annotations

import argparse
import sys

from siam.explain._collect import SPLITS, add_common_arguments, collect
from siam.explain.report import model_report_inputs, write_html_report

__all__ = ["SPLITS", "add_common_arguments", "add_arguments", "collect", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    model, ident, baseline, explained, notes, metrics = collect(args)
    kw = model_report_inputs(model, explained, baseline=baseline, n_panels=args.panels, faithfulness_images=0,
                             max_megapixels=args.max_megapixels)
    out = write_html_report(args.out, title="SIAM figures", model=ident, metrics=metrics, notes=notes,
                            figures_only=True, **kw)
    written = sorted(p.name for p in (out / "figures").glob("*.png"))
    print(f"siam figures: wrote {', '.join(written)} (and their data) to {out}", file=sys.stderr)
    return 1 if explained is not None and explained.failures else 0
