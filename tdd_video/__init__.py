"""tdd_video: Target-Driven Distillation for Stable Video Diffusion and SDXL."""
__version__ = "0.1.0"
