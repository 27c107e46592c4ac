"""The `method:` sections of a recipe, one dataclass per method (pure Python: a recipe is checked
before torch is imported). `method.name` picks the class; `method_config_class(name)` looks it up.
The methods themselves (tdd_video.methods.tdd, .animatelcm) import their config from here."""
from __future__ import annotations

from dataclasses import dataclass, field

from tdd_video.core.params import validate_tdd_params
from tdd_video.errors import ConfigError, check_range


@dataclass
class AdversarialConfig:
    """`method.adv`: adversarial TDD (docs/math.md §11). weight 0 = off (plain TDD)."""

    weight: float = 0.0                 # λ_adv on the generator hinge loss −mean(D(fake))
    start_step: int = 0                 # the adversarial terms (G and D) start after this many optimizer steps
    ramp_steps: int = 0                 # λ rises linearly from 0 to `weight` over these steps after start_step
    d_lr: float = 2e-4                  # AdamW lr of the discriminator heads
    d_betas: list = field(default_factory=lambda: [0.0, 0.99])
    d_weight_decay: float = 0.0
    d_grad_clip: float = 1.0            # 0 = off
    head_channels: int = 64             # hidden width of every head
    temporal: bool = True               # temporal heads across frames (video latents only)
    noise_u_range: list = field(default_factory=lambda: [0.05, 0.45])   # re-noising level u_d ~ U[lo, hi]
    early_exit: bool = True             # stop the frozen UNet after its mid block (not under ZeRO-3)

    def validate(self, p: str = "method.adv") -> None:
        check_range(f"{p}.weight", self.weight, 0.0, None)
        check_range(f"{p}.start_step", self.start_step, 0, None)
        check_range(f"{p}.ramp_steps", self.ramp_steps, 0, None)
        check_range(f"{p}.d_lr", self.d_lr, 0.0, 1.0, lo_open=True)
        b = self.d_betas
        if len(b) != 2 or not all(isinstance(v, (int, float)) and 0 <= v < 1 for v in b):
            raise ConfigError(f"{p}.d_betas", f"got {b!r}, need [beta1, beta2] in [0, 1)")
        check_range(f"{p}.d_weight_decay", self.d_weight_decay, 0.0, 1.0)
        check_range(f"{p}.d_grad_clip", self.d_grad_clip, 0.0, None)
        check_range(f"{p}.head_channels", self.head_channels, 4, 4096)
        r = self.noise_u_range
        if len(r) != 2 or not all(isinstance(v, (int, float)) for v in r) or not 0 < r[0] <= r[1] <= 1:
            raise ConfigError(f"{p}.noise_u_range", f"got {r!r}, need [lo, hi] with 0 < lo <= hi <= 1")

    def weight_at(self, step: int) -> float:
        """λ_adv at optimizer step `step` (0-based): 0 before start_step, then a linear ramp to `weight`."""
        if self.weight == 0 or step < self.start_step:
            return 0.0
        if self.ramp_steps == 0:
            return self.weight
        return self.weight * min(1.0, (step - self.start_step + 1) / self.ramp_steps)


@dataclass
class TDDConfig:
    """Options of the TDD method (the `method:` section of a recipe)."""

    num_grid: int = 250                 # N, teacher grid points
    k_min: int = 4
    k_max: int = 8
    eta_max: float = 0.3
    p_uncond: float = 0.2               # decoupled guidance: fraction of samples trained on ∅
    guidance_min_range: list = field(default_factory=lambda: [1.0, 1.0])   # w_min ~ U[lo, hi] (video)
    guidance_max_range: list = field(default_factory=lambda: [3.0, 3.0])   # w_max ~ U[lo, hi]; images: w
    teacher_solver: str = "euler"       # euler | heun
    teacher_substeps: int = 1
    teacher_hop: int = 1                # grid steps t → t_n the teacher solves (1 = TDD; >1: fewer bootstrap hops)
    target_ema: float = 0.0             # 0 = online student under no_grad; else fp32 EMA decay (1 = frozen at init)
    target_hops: int = 1                # the target jumps t_n → s in this many equal sub-hops (1 = TDD), §3.5
    target_grid: int = 0                # > 0: the target walks the S_{target_grid} points between t_n and s, §3.5
    teacher_target: bool = False        # the teacher alone solves t → s in teacher_substeps (no bootstrap), §3.5
    loss: str = "huber"                 # huber | l2
    huber_c: float = 1e-3
    loss_x0_cap: float = 1.0            # ≥ 1; weight min(√(α_s²+σ_s²)/c_ts, cap) on the x_s difference (1 = TDD)
    hf_weight: float = 0.0              # ≥ 0; + this × the same loss on the spatial Laplacians of both sides (0 = TDD)
    source_density: str = "uniform"     # uniform | high-noise | low-noise
    adv: AdversarialConfig = field(default_factory=AdversarialConfig)   # adversarial TDD (off by default)

    def validate(self, p: str = "method") -> None:
        try:
            validate_tdd_params(self.num_grid, self.k_min, self.k_max, self.eta_max)
        except ConfigError as e:
            raise ConfigError(f"{p}.{e.key}", str(e).split(": ", 1)[-1]) from None
        check_range(f"{p}.p_uncond", self.p_uncond, 0.0, 1.0)
        for key in ("guidance_min_range", "guidance_max_range"):
            r = getattr(self, key)
            if len(r) != 2 or not all(isinstance(v, (int, float)) for v in r) or r[0] > r[1] or r[0] < 0:
                raise ConfigError(f"{p}.{key}", f"got {r!r}, need [lo, hi] with 0 <= lo <= hi")
        if self.guidance_min_range[0] > self.guidance_max_range[1]:
            raise ConfigError(f"{p}.guidance_min_range", "w_min range lies above the w_max range")
        if self.teacher_solver not in ("euler", "heun"):
            raise ConfigError(f"{p}.teacher_solver", f"got {self.teacher_solver!r}, allowed values are 'euler', 'heun'")
        check_range(f"{p}.teacher_substeps", self.teacher_substeps, 1, 64)
        check_range(f"{p}.teacher_hop", self.teacher_hop, 1, self.num_grid)
        check_range(f"{p}.target_ema", self.target_ema, 0.0, 1.0)
        check_range(f"{p}.target_hops", self.target_hops, 1, 16)
        if self.target_grid:
            check_range(f"{p}.target_grid", self.target_grid, self.k_max, self.num_grid)
            if self.target_hops != 1 or self.eta_max != 0:
                raise ConfigError(f"{p}.target_grid", f"got {self.target_grid}: the grid walk replaces target_hops "
                                  f"(must be 1, got {self.target_hops}) and needs eta_max = 0 (got {self.eta_max}), "
                                  "so that s lies on S_K and the walk has a fixed length")
        if not isinstance(self.teacher_target, bool):
            raise ConfigError(f"{p}.teacher_target", f"got {self.teacher_target!r}, need true or false")
        if self.teacher_target and (self.teacher_hop != 1 or self.target_hops != 1 or self.target_grid
                                    or self.target_ema != 0):
            raise ConfigError(f"{p}.teacher_target", "true makes the teacher solve the whole jump t → s, so there is "
                              "no target network and no teacher hop: needs teacher_hop = 1, target_hops = 1, "
                              f"target_grid = 0 and target_ema = 0 (got {self.teacher_hop}, {self.target_hops}, "
                              f"{self.target_grid}, {self.target_ema})")
        if self.loss not in ("huber", "l2"):
            raise ConfigError(f"{p}.loss", f"got {self.loss!r}, allowed values are 'huber', 'l2'")
        check_range(f"{p}.huber_c", self.huber_c, 0.0, None, lo_open=True)
        check_range(f"{p}.loss_x0_cap", self.loss_x0_cap, 1.0, None)
        check_range(f"{p}.hf_weight", self.hf_weight, 0.0, None)
        if self.source_density not in ("uniform", "high-noise", "low-noise"):
            raise ConfigError(f"{p}.source_density", f"got {self.source_density!r}, allowed values are "
                                                     "'uniform', 'high-noise', 'low-noise'")


@dataclass
class AnimateLCMConfig:
    """Options of the AnimateLCM method (the `method:` section of a recipe)."""

    num_grid: int = 40                                                       # N (Karras grid points)
    guidance_min_choices: list = field(default_factory=lambda: [1.0, 1.25, 1.5])   # w_min ~ U{…}
    guidance_max_choices: list = field(default_factory=lambda: [2.0, 2.25, 2.5])   # w_max ~ U{…}
    target_ema: float = 0.95             # fp32 EMA decay of the target network θ⁻
    loss: str = "huber"                  # huber | l2
    huber_c: float = 1e-3
    weight_power: float = -0.1           # loss weight (σ_n − σ_{n+1})^weight_power

    def validate(self, p: str = "method") -> None:
        check_range(f"{p}.num_grid", self.num_grid, 2, 10000)
        for key in ("guidance_min_choices", "guidance_max_choices"):
            v = getattr(self, key)
            if not v or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in v):
                raise ConfigError(f"{p}.{key}", f"got {v!r}, need a non-empty list of numbers >= 0")
        check_range(f"{p}.target_ema", self.target_ema, 0.0, 1.0, hi_open=True)
        if self.loss not in ("huber", "l2"):
            raise ConfigError(f"{p}.loss", f"got {self.loss!r}, allowed values are 'huber', 'l2'")
        check_range(f"{p}.huber_c", self.huber_c, 0.0, None, lo_open=True)
        check_range(f"{p}.weight_power", self.weight_power, -10.0, 10.0)


CONFIGS: dict[str, type] = {"tdd": TDDConfig, "animatelcm": AnimateLCMConfig}


def method_config_class(name: str) -> type:
    """The config dataclass of method `name`; ConfigError on `method.name` listing the methods otherwise."""
    if name not in CONFIGS:
        raise ConfigError("method.name", f"got {name!r}, allowed values are {', '.join(map(repr, sorted(CONFIGS)))}")
    return CONFIGS[name]
