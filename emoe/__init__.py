"""EMOE (CVPR 2025) in pure PyTorch: Mixture of Modality Experts with Unimodal Distillation."""

from emoe.config import EMOEConfig, LossConfig, ModelConfig, TrainConfig

__all__ = ["EMOEConfig", "LossConfig", "ModelConfig", "TrainConfig", "__version__"]
__version__ = "0.1.0"
