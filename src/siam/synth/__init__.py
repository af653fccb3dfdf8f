"""``siam synth``: the planted-world generator, a tool that *writes* datasets (the readers are in
:mod:`siam.data`, which never imports this package).

* :mod:`siam.synth.world` -- :func:`generate` writes planted-truth scenes in the real SUN Attributes
  and ScenicOrNot formats, with the truth (templates, masks, noise floor) beside them;
  :func:`render_scene` / :func:`encode_as_written` re-render any written scene, optionally without
  some attributes.
* :mod:`siam.synth.cli` -- the ``siam synth`` command (``add_arguments`` / ``run``).
* ``_render`` (the procedural scenes) and ``_sun33`` (the real SUN label rows scenes are drawn
  from) are private.

    from siam.synth import SynthConfig, generate
    res = generate("/tmp/s", seed=0, config=SynthConfig(n_sun=500, n_son=800), workers=2)
"""

from __future__ import annotations

from siam.synth import cli, world
from siam.synth.cli import add_arguments, run
from siam.synth.world import (
    DEFAULT_ATTRIBUTES,
    NOT_DISTINCT,
    PLANTED,
    RenderedScene,
    SynthConfig,
    SynthResult,
    encode_as_written,
    generate,
    planted_templates,
    pool_to_grid,
    render_scene,
)

__all__ = [*world.__all__, *cli.__all__]
