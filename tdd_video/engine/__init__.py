"""Training engine: recipes (config), the loop (trainer), backends (plain / DeepSpeed / accelerate),
trainable layouts and network roles, fp32 EMA, atomic checkpoints with exact resume, logging and
validation renders.

    from tdd_video.engine import load_config, train
    cfg = load_config("configs/toy/tdd_svd_tiny.yaml", ["train.max_steps=20"])
    result = train(cfg)          # {'losses', 'checkpoint', 'export', ...}
"""
from tdd_video.engine.config import Config, config_from_dict, load_config
from tdd_video.engine.trainer import NonFiniteLoss, train

__all__ = ["Config", "config_from_dict", "load_config", "NonFiniteLoss", "train"]
