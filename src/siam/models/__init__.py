"""Models: backbone f, attribute head, template head g, and their composition."""

from siam.models.baseline import Baseline, BaselineOutput, build_baseline
from siam.models.config import ModelConfig
from siam.models.siam import SIAM, SIAMOutput, build_model

__all__ = ["SIAM", "SIAMOutput", "Baseline", "BaselineOutput", "ModelConfig", "build_model", "build_baseline"]
