"""Few-step inference: the TDD diffusers scheduler, the family sampling loop and Distillation++ (SPEC §5–7),
and the AnimateLCM baseline's scheduler (SPEC §8).

    from tdd_video.sampling import TDDScheduler, AnimateLCMScheduler, sample, RefineSettings, ClipSettings
"""
from tdd_video.sampling.animatelcm import AnimateLCMScheduler, AnimateLCMSchedulerOutput, sample_animatelcm
from tdd_video.sampling.refine import RefineSettings
from tdd_video.sampling.sample import ClipSettings, SamplingStats, guided_denoise, make_scheduler, sample
from tdd_video.sampling.scheduler import TDDScheduler, TDDSchedulerOutput

__all__ = ["AnimateLCMScheduler", "AnimateLCMSchedulerOutput", "ClipSettings", "RefineSettings", "SamplingStats", "TDDScheduler", "TDDSchedulerOutput",
           "guided_denoise", "make_scheduler", "sample", "sample_animatelcm"]
