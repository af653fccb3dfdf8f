"""Scoring at scale: the default inference path, batch scoring to Parquet, and maps.

* :func:`prepare_for_inference` -- eval, channels_last, bf16 where native (shared with explain/serve).
* :func:`score_images` -- ``siam score``: resumable Parquet part files plus a manifest.
* :func:`read_scores` -- the finished rows of a score folder as one ``pyarrow.Table``
  (or lazily: ``pyarrow.dataset.dataset(OUT)``).
* Several processes (torchrun, srun, ``--devices N``): :mod:`siam.scoring.distributed`; the
  streamed input list and the part/rank arithmetic: :mod:`siam.scoring.inputs`.
* ``siam map`` (:mod:`siam.scoring.map`) -- a self-contained HTML map of predicted scores.
"""

from siam.scoring.batch import IMAGE_EXTENSIONS, ScoreSummary, list_inputs, read_manifest, read_scores, score_images
from siam.scoring.distributed import RankInfo, rank_from_env
from siam.scoring.inference import prepare_for_inference, resolve_precision

__all__ = [
    "IMAGE_EXTENSIONS",
    "RankInfo",
    "ScoreSummary",
    "list_inputs",
    "prepare_for_inference",
    "rank_from_env",
    "read_manifest",
    "read_scores",
    "resolve_precision",
    "score_images",
]
