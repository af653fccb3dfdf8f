"""Training on Lightning (paper Sec. 3.3): losses, the LightningModule, typed configs, ``siam train``.

Public API::

    from siam.training import load_config, fit, SiamModule
    cfg = load_config("configs/quickstart.yaml", stage="sun", overrides=["data.root=runs/data"])
    result = fit(cfg)            # FitResult: model_path, last_checkpoint, global_step, metrics
"""

from siam.training.config import TrainConfig, config_from_dict, load_config
from siam.training.engine import FitResult, fit
from siam.training.losses import son_loss, sun_loss
from siam.training.module import NonFiniteError, SiamModule

__all__ = ["TrainConfig", "load_config", "config_from_dict", "fit", "FitResult", "SiamModule",
           "NonFiniteError", "sun_loss", "son_loss"]
