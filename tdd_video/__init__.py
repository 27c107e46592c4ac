"""tdd_video: Target-Driven Distillation for Stable Video Diffusion and SDXL."""
__version__ = "0.1.0"

# Lazy re-exports: `import tdd_video` stays cheap (no torch/diffusers import until used).
_LAZY = {"load_img2vid": "tdd_video.apps.api", "export_pipeline": "tdd_video.apps.api",
         "TDDScheduler": "tdd_video.sampling"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tdd_video' has no attribute {name!r}")
