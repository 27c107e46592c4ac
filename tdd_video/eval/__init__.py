"""Evaluation: per-video metrics, FVD (Fréchet math + pluggable features) and the comparison harness."""
from tdd_video.eval.fvd import I3DFeatures, frechet_distance, fvd, gaussian_stats
from tdd_video.eval.metrics import (
                                    first_frame_psnr,
                                    format_metric,
                                    json_safe,
                                    latent_mse,
                                    psnr,
                                    ratio,
                                    sharpness,
                                    ssim,
                                    temporal_change,
)

__all__ = ["I3DFeatures", "frechet_distance", "fvd", "gaussian_stats", "first_frame_psnr", "format_metric",
           "json_safe", "latent_mse", "psnr", "ratio", "sharpness", "ssim", "temporal_change"]
