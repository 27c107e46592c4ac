"""Few-step inference: the TDD diffusers scheduler, the family sampling loop and Distillation++ (SPEC §5–7)."""
from tdd_video.sampling.scheduler import TDDScheduler, TDDSchedulerOutput

__all__ = ["TDDScheduler", "TDDSchedulerOutput"]
