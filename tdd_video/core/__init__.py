"""Pure tensor math of TDD (no nn.Module, no I/O); the equations are written up in docs/math.md §1–8.

Names are re-exported lazily (PEP 562): ``from tdd_video.core import jump`` imports core/ddim.py on
first use, so torch-free submodules (``core.params``) load without torch.
"""
import importlib

_WHERE = {
    "add_noise": "ddim",
    "ANIMATELCM_NUM_GRID": "grid",
    "animatelcm_step_indices": "grid",
    "cfg": "guidance",
    "clip_x0": "clipping",
    "clip_x0_dynamic": "clipping",
    "clip_x0_static": "clipping",
    "ddim_jump": "ddim",
    "distill_loss": "losses",
    "EDMSchedule": "schedules",
    "framewise_scale": "guidance",
    "grid_u": "grid",
    "grid_walk_bound": "grid",
    "grid_walk_levels": "grid",
    "guidance_weights": "guidance",
    "heun_step": "ddim",
    "hinge_d_loss": "losses",
    "hinge_g_loss": "losses",
    "jump": "ddim",
    "karras_grid_u": "grid",
    "l2_loss": "losses",
    "laplacian": "losses",
    "make_schedule": "schedules",
    "nonuniform_schedule_indices": "grid",
    "null_mask": "guidance",
    "pseudo_huber_loss": "losses",
    "renoise": "ddim",
    "sample_guidance_range": "guidance",
    "scaled_linear_alphas_cumprod": "schedules",
    "schedule_indices": "grid",
    "select_targets": "grid",
    "source_density": "grid",
    "subhop_levels": "grid",
    "TargetSample": "grid",
    "tau_table": "grid",
    "validate_tdd_params": "params",
    "x0_loss_weight": "ddim",
    "VPSchedule": "schedules",
    "where_null": "guidance",
}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"tdd_video.core.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'tdd_video.core' has no attribute {name!r}")


def __dir__():
    return __all__
