"""Training of the per-Gaussian feature field (geometry frozen). Entry point: `train(TrainConfig)`."""

from splatseg.train.config import TrainConfig
from splatseg.train.trainer import train

__all__ = ["TrainConfig", "train"]
