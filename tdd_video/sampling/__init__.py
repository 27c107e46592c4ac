"""Few-step inference: the TDD diffusers scheduler, the family sampling loop and Distillation++ (SPEC §5–7).

    from tdd_video.sampling import TDDScheduler, sample, RefineSettings, ClipSettings
"""
from tdd_video.sampling.refine import RefineSettings
from tdd_video.sampling.sample import ClipSettings, SamplingStats, guided_denoise, make_scheduler, sample
from tdd_video.sampling.scheduler import TDDScheduler, TDDSchedulerOutput

__all__ = ["ClipSettings", "RefineSettings", "SamplingStats", "TDDScheduler", "TDDSchedulerOutput",
           "guided_denoise", "make_scheduler", "sample"]
