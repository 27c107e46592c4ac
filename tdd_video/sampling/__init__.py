"""Few-step inference: the TDD diffusers scheduler, the one family sampling loop and Distillation++
(docs/math.md §5–7), the AnimateLCM baseline's scheduler (§8) and the teacher's Karras Euler sampler.

    from tdd_video.sampling import TDDScheduler, AnimateLCMScheduler, sample, RefineSettings, ClipSettings
"""
from tdd_video.sampling.animatelcm import AnimateLCMScheduler, AnimateLCMSchedulerOutput
from tdd_video.sampling.euler import KarrasEulerSampler
from tdd_video.sampling.guided import SamplingStats, guidance_scale, guided_denoise
from tdd_video.sampling.refine import RefineSettings
from tdd_video.sampling.sample import ClipSettings, make_sampler, make_scheduler, sample
from tdd_video.sampling.scheduler import TDDScheduler, TDDSchedulerOutput

__all__ = ["AnimateLCMScheduler", "AnimateLCMSchedulerOutput", "ClipSettings", "KarrasEulerSampler", "RefineSettings",
           "SamplingStats", "TDDScheduler", "TDDSchedulerOutput", "guidance_scale", "guided_denoise", "make_sampler",
           "make_scheduler", "sample"]
