"""Pure tensor math of TDD (no nn.Module, no I/O); the equations are written up in docs/math.md §1–8."""
from tdd_video.core.clipping import clip_x0, clip_x0_dynamic, clip_x0_static
from tdd_video.core.grid import (
                                 ANIMATELCM_NUM_GRID,
                                 TargetSample,
                                 animatelcm_step_indices,
                                 grid_u,
                                 karras_grid_u,
                                 nonuniform_schedule_indices,
                                 schedule_indices,
                                 select_targets,
                                 source_density,
                                 tau_table,
                                 validate_tdd_params,
)
from tdd_video.core.guidance import cfg, framewise_scale, guidance_weights, null_mask, sample_guidance_range, where_null
from tdd_video.core.jump import add_noise, ddim_jump, heun_step, jump, renoise
from tdd_video.core.losses import distill_loss, l2_loss, pseudo_huber_loss
from tdd_video.core.schedules import EDMSchedule, VPSchedule, make_schedule, scaled_linear_alphas_cumprod

__all__ = [
    "add_noise",
    "ANIMATELCM_NUM_GRID",
    "animatelcm_step_indices",
    "cfg",
    "clip_x0",
    "clip_x0_dynamic",
    "clip_x0_static",
    "ddim_jump",
    "distill_loss",
    "EDMSchedule",
    "framewise_scale",
    "grid_u",
    "guidance_weights",
    "heun_step",
    "jump",
    "karras_grid_u",
    "l2_loss",
    "make_schedule",
    "nonuniform_schedule_indices",
    "null_mask",
    "pseudo_huber_loss",
    "renoise",
    "sample_guidance_range",
    "scaled_linear_alphas_cumprod",
    "schedule_indices",
    "select_targets",
    "source_density",
    "TargetSample",
    "tau_table",
    "validate_tdd_params",
    "VPSchedule",
    "where_null",
]
