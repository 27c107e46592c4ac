"""Training engine: recipes (config), the loop (trainer), backends (plain / DeepSpeed / accelerate),
trainable layouts and network roles, fp32 EMA, atomic checkpoints with exact resume, logging and
validation renders.

    from tdd_video.engine import load_config, train
    cfg = load_config("configs/toy/tdd_svd_tiny.yaml", ["train.max_steps=20"])
    result = train(cfg)          # {'losses', 'checkpoint', 'export', ...}
"""
import importlib

_WHERE = {"Config": "config", "config_from_dict": "config", "load_config": "config", "NonFiniteLoss": "trainer",
          "train": "trainer"}
__all__ = sorted(_WHERE)


def __getattr__(name):          # lazy (PEP 562): loading a recipe does not import the training stack
    if name in _WHERE:
        return getattr(importlib.import_module(f"tdd_video.engine.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'tdd_video.engine' has no attribute {name!r}")
