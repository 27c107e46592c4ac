"""TDD method step (docs/math.md §3–4) on stand-in EDM-video and VP-image families, and on the real tiny
SVD / SDXL families when tdd_video.families.tiny is available."""
import copy

import pytest
import torch
from standin_family import ToyFamily

from tdd_video.errors import ConfigError
from tdd_video.methods import TDD, StaticRoles, TDDConfig


class CountingNet(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.calls, self.rows = net, 0, 0

    def forward(self, x, t, emb):
        self.calls += 1
        self.rows += emb.shape[0]
        return self.net(x, t, emb)


def _batch(kind, b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (b, 3, 4, 8, 8) if kind == "edm" else (b, 4, 8, 8)
    return torch.randn(shape, generator=g), torch.randn(b, 8, generator=g)


@pytest.mark.parametrize("kind", ["edm", "vp"])
def test_step_grads_only_on_student_and_teacher_untouched(kind):
    fam = ToyFamily(kind)
    teacher = fam.unet.requires_grad_(False)
    student = copy.deepcopy(teacher).requires_grad_(True)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x0, emb = _batch(kind)
    cond = fam.encode_conditioning({"emb": emb})
    method = TDD(TDDConfig(guidance_min_range=[1.0, 1.5], guidance_max_range=[2.0, 3.0]), fam)
    out = method.training_step(x0, cond, StaticRoles(student, teacher), torch.Generator().manual_seed(1))
    assert torch.isfinite(out.loss) and out.loss.dtype == torch.float32 and out.loss.item() > 0
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in student.parameters())
    assert any(p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    st = out.stats
    for key in ("k", "tau", "eta", "loss", "sigma", "s", "t"):
        assert st[key].shape == (6,), key
    assert ((st["s"] <= st["t"] - 1 / 250 + 1e-12) & (st["k"] >= 4) & (st["k"] <= 8)).all()
    assert ((st["eta"] >= 0) & (st["eta"] <= 0.3)).all()


def test_teacher_cfg_is_one_batched_forward_and_target_skip():
    fam = ToyFamily("edm")
    teacher, student = CountingNet(fam.unet), CountingNet(copy.deepcopy(fam.unet))
    x0, emb = _batch("edm", b=5)
    cond = fam.encode_conditioning({"emb": emb})
    m = TDD(TDDConfig(eta_max=0.0, guidance_min_range=[1.0, 1.0], guidance_max_range=[2.0, 2.0]), fam)
    m.training_step(x0, cond, StaticRoles(student, teacher), torch.Generator().manual_seed(0))
    assert teacher.calls == 1 and teacher.rows == 10          # [∅; c] in one 2B forward
    # student: 1 forward of B rows; target (online student): 1 forward of all B rows, also those with
    # s == t_n (a data-dependent skip would desynchronise ZeRO-3 ranks)
    assert student.calls == 2 and student.rows == 10
    # w == 1 everywhere: no uncond branch at all
    teacher.calls = teacher.rows = 0
    m1 = TDD(TDDConfig(guidance_min_range=[1.0, 1.0], guidance_max_range=[1.0, 1.0]), fam)
    m1.training_step(x0, cond, StaticRoles(student, teacher), torch.Generator().manual_seed(0))
    assert teacher.rows == 5
    # heun with 2 sub-steps: 2 evaluations per sub-step, on every rank whatever the draws
    teacher.calls = 0
    m2 = TDD(TDDConfig(teacher_solver="heun", teacher_substeps=2, source_density="high-noise"), fam)
    m2.training_step(x0, cond, StaticRoles(student, teacher), torch.Generator().manual_seed(3))
    assert teacher.calls == 4


def test_target_is_teacher_step_when_s_equals_tn():
    """With η = 0 and a source on an S_K point's neighbour, s = t_n: target = x_{t_n} exactly,
    so the loss equals the distance of the student jump to the teacher's solver output."""
    fam = ToyFamily("vp")
    net = CountingNet(fam.unet)
    x0, emb = _batch("vp", b=4)
    cond = fam.encode_conditioning({"emb": emb})
    cfg = TDDConfig(num_grid=8, k_min=8, k_max=8, eta_max=0.0, p_uncond=0.0,
                    guidance_min_range=[1.0, 1.0], guidance_max_range=[1.0, 1.0])
    out = TDD(cfg, fam).training_step(x0, cond, StaticRoles(net, net), torch.Generator().manual_seed(0))
    # K = N: every grid point is on S_K, so τ = t_n and s = t_n for every sample; student = teacher
    # and w = 1, so x_pred == x_target and the loss is exactly 0
    assert out.stats["target_skipped"].all()
    assert out.loss.item() == pytest.approx(0.0, abs=1e-6)
    # every row skips its jump, yet the target forward still runs: teacher + target + student = 3 calls,
    # as on a rank where no row skips (ZeRO-3 gathers weights collectively in every forward)
    assert net.calls == 3


def test_null_conditioning_fraction():
    fam = ToyFamily("vp")
    x0, emb = _batch("vp", b=400)
    cond = fam.encode_conditioning({"emb": emb})
    out = TDD(TDDConfig(p_uncond=0.25), fam).training_step(x0[:, :, :2, :2], cond, StaticRoles(fam.unet, fam.unet),
                                                          torch.Generator().manual_seed(0))
    assert 0.18 < out.stats["null"].float().mean().item() < 0.32


@pytest.mark.parametrize("bad,key", [({"k_min": 6, "k_max": 4}, "method.k_max"),
                                     ({"eta_max": 1.0}, "method.eta_max"),
                                     ({"num_grid": 6, "k_max": 8}, "method.num_grid"),
                                     ({"p_uncond": 1.5}, "method.p_uncond"),
                                     ({"teacher_solver": "rk4"}, "method.teacher_solver"),
                                     ({"guidance_max_range": [3, 2]}, "method.guidance_max_range"),
                                     ({"loss_x0_cap": 0.5}, "method.loss_x0_cap"),
                                     ({"hf_weight": -0.1}, "method.hf_weight")])
def test_config_errors(bad, key):
    with pytest.raises(ConfigError) as e:
        TDDConfig(**bad).validate("method")
    assert e.value.key == key


@pytest.mark.parametrize("kind", ["edm", "vp"])
def test_loss_x0_cap_reweights_per_sample(kind):
    """cap = 1 is the plain x_s loss bit for bit; a cap multiplies each sample's x_s difference by
    core.x0_loss_weight (L2: the per-sample loss by its square), never less than 1."""
    from tdd_video.core import x0_loss_weight
    fam = ToyFamily(kind)
    x0, emb = _batch(kind)
    cond = fam.encode_conditioning({"emb": emb})

    def run(cap):
        m = TDD(TDDConfig(loss="l2", loss_x0_cap=cap), fam)
        return m.training_step(x0, cond, StaticRoles(fam.unet, fam.unet), torch.Generator().manual_seed(4))

    base, one, big = run(1.0), run(1.0), run(50.0)
    assert torch.equal(base.stats["loss"], one.stats["loss"])
    assert torch.equal(base.stats["s"], big.stats["s"])              # same draws
    st, sched = big.stats, fam.schedule
    w = x0_loss_weight(*sched.alpha_sigma(st["t"]), *sched.alpha_sigma(st["s"]), 50.0)
    assert (w >= 1).all() and (w > 1).any()
    torch.testing.assert_close(big.stats["loss"], base.stats["loss"] * w ** 2, rtol=1e-4, atol=0)


@pytest.mark.parametrize("kind", ["edm", "vp"])
def test_hf_weight_adds_the_loss_of_the_laplacians(kind):
    """hf_weight 0 is the plain loss bit for bit; above 0 each sample's loss grows by hf_weight × a fixed
    non-negative term (the loss of the two sides' Laplacians), so the increase is linear in the weight."""
    fam = ToyFamily(kind)
    x0, emb = _batch(kind)
    cond = fam.encode_conditioning({"emb": emb})

    def run(hf):
        m = TDD(TDDConfig(loss="l2") if hf is None else TDDConfig(loss="l2", hf_weight=hf), fam)
        return m.training_step(x0, cond, StaticRoles(fam.unet, fam.unet), torch.Generator().manual_seed(4)).stats

    plain, zero, one, three = run(None), run(0.0), run(1.0), run(3.0)
    assert torch.equal(plain["loss"], zero["loss"])
    assert torch.equal(zero["s"], three["s"])                        # same draws
    extra = one["loss"] - zero["loss"]
    assert (extra > 0).all()
    torch.testing.assert_close(three["loss"] - zero["loss"], 3 * extra, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- real tiny families + LoRA roles
def _tiny_family(name):
    from tdd_video.families import load_family
    return load_family(name, "tiny")


def _tiny_batch(name, b=2):
    g = torch.Generator().manual_seed(0)
    if name == "svd":
        return {"pixel_values": torch.rand(b, 4, 3, 64, 64, generator=g) * 2 - 1,
                "fps_id": torch.tensor([6, 11][:b]), "motion_bucket_id": torch.tensor([127, 40][:b])}
    return {"pixel_values": torch.rand(b, 3, 64, 64, generator=g) * 2 - 1, "caption": ["a red ball", "a cat"][:b]}


@pytest.mark.parametrize("name", ["svd", "sdxl"])
def test_step_on_tiny_family_with_lora_on_shared_base(name):
    pytest.importorskip("tdd_video.lora")
    from tdd_video.engine.trainables import Trainables
    fam = _tiny_family(name)
    base_before = {k: v.clone() for k, v in fam.unet.state_dict().items()}
    nets = Trainables(fam, "lora", lora_rank=4, lora_preset="attn")
    with torch.no_grad():   # make the student differ from the teacher (LoRA B starts at zero)
        for p in nets.parameters():
            p.add_(0.01 * torch.randn_like(p))
    g = torch.Generator().manual_seed(0)
    batch = _tiny_batch(name)
    x0 = fam.encode_latents(batch, g)
    cond = fam.encode_conditioning(batch, g, train=True)
    method = TDD(TDDConfig(guidance_min_range=[1.0, 1.5], guidance_max_range=[2.0, 3.0], p_uncond=0.5), fam)
    out = method.training_step(x0, cond, nets, g)
    assert torch.isfinite(out.loss) and out.loss.item() > 0
    out.loss.backward()
    trainable = {id(p) for p in nets.parameters()}
    assert trainable and all(p.grad is not None for p in nets.parameters())
    assert all(p.grad is None for p in fam.unet.parameters() if id(p) not in trainable)
    after = {k.replace(".base_layer", ""): v for k, v in fam.unet.state_dict().items() if "lora_" not in k}
    assert after.keys() == base_before.keys()
    assert all(torch.equal(v, after[k]) for k, v in base_before.items())   # base (= teacher) untouched
    # the teacher role really is the base: adapters disabled reproduces the un-adapted output
    u = torch.full((x0.shape[0],), 0.5, dtype=torch.float64)
    xt = x0 + 1.0
    with torch.no_grad(), nets.teacher() as t:
        a = fam.denoise(xt, u, cond, unet=t)
    with torch.no_grad(), nets.student() as s:
        b = fam.denoise(xt, u, cond, unet=s)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("kind", ["edm", "vp"])
def test_target_hops_split_the_target_jump(kind):
    """target_hops = m: the target runs m times on the whole batch and its result is the chain of m DDIM
    jumps through core.subhop_levels (docs/math.md §3.5); m = 1 is TDD's single jump."""
    from tdd_video.core import jump, subhop_levels
    fam = ToyFamily(kind)
    net = CountingNet(fam.unet)
    x0, emb = _batch(kind, b=5)
    cond = fam.encode_conditioning({"emb": emb})
    sched = fam.schedule
    g = torch.Generator().manual_seed(0)
    x = torch.randn(x0.shape, generator=g)
    u_from = torch.tensor([0.9, 0.6, 0.4, 0.3, 0.2], dtype=torch.float64)
    u_to = torch.tensor([0.5, 0.1, 0.0, 0.3, 0.104], dtype=torch.float64)     # row 3: s = t_n (identity)
    roles = StaticRoles(net, net)
    one = TDD(TDDConfig(), fam).target_jump(roles, x, u_from, u_to, cond)
    assert net.calls == 1
    two = TDD(TDDConfig(target_hops=2), fam).target_jump(roles, x, u_from, u_to, cond)
    assert net.calls == 3 and net.rows == 15
    lv = subhop_levels(u_from, u_to, 2, sched)
    with torch.no_grad():
        mid = jump(sched, x, fam.denoise(x, lv[0], cond, unet=fam.unet).float(), lv[0], lv[1]).float()
        end = jump(sched, mid, fam.denoise(mid, lv[1], cond, unet=fam.unet).float(), lv[1], lv[2]).float()
        single = jump(sched, x, fam.denoise(x, u_from, cond, unet=fam.unet).float(), u_from, u_to).float()
    moving = [0, 1, 2, 4]
    assert torch.allclose(two[moving], end[moving], atol=1e-5)
    assert torch.allclose(one[moving], single[moving], atol=1e-5)
    assert torch.equal(two[3], x[3]) and torch.equal(one[3], x[3])
    assert not torch.allclose(two[moving], one[moving], atol=1e-3)     # the split changes the target


def test_target_ema_one_is_a_frozen_target_and_hops_are_range_checked():
    from tdd_video.engine.ema import EMA
    TDDConfig(target_ema=1.0, target_hops=16).validate("method")
    p = torch.nn.Parameter(torch.ones(3))
    ema = EMA([("w", p)], 1.0)
    with torch.no_grad():
        p.fill_(5.0)
    ema.update([("w", p)])
    assert torch.equal(ema.shadow["w"], torch.ones(3))              # decay 1: the initial weights for good
    for bad, key in (({"target_hops": 0}, "method.target_hops"), ({"target_hops": 17}, "method.target_hops"),
                     ({"target_ema": 1.5}, "method.target_ema")):
        with pytest.raises(ConfigError) as e:
            TDDConfig(**bad).validate("method")
        assert e.value.key == key


def test_frozen_target_needs_a_starting_student(tmp_path):
    """target_ema 1 without an init would freeze the untrained base as the target: refused, naming the key."""
    import yaml

    from tdd_video.engine.config import load_config
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"method": {"name": "tdd", "target_ema": 1.0, "target_hops": 4}}))
    with pytest.raises(ConfigError) as e:
        load_config(recipe)
    assert e.value.key == "method.target_ema" and "init_lora" in str(e.value)
    assert load_config(recipe, ["trainable.init_lora=some/student"]).method.target_hops == 4


@pytest.mark.parametrize("kind", ["edm", "vp"])
def test_target_grid_walks_the_finer_grid(kind):
    """target_grid = G: the target makes grid_walk_bound calls on the whole batch (a constant of the config)
    and its result is the chain of DDIM jumps through core.grid_walk_levels (docs/math.md §3.5)."""
    from tdd_video.core import grid_walk_levels, jump
    fam = ToyFamily(kind)
    net = CountingNet(fam.unet)
    x0, emb = _batch(kind, b=3)
    cond = fam.encode_conditioning({"emb": emb})
    sched = fam.schedule
    x = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    u_from = torch.tensor([187, 125, 130], dtype=torch.float64) / 250
    u_to = torch.tensor([125, 125, 125], dtype=torch.float64) / 250               # row 1: identity
    out = TDD(TDDConfig(k_min=4, k_max=4, eta_max=0.0, target_grid=16), fam).target_jump(
        StaticRoles(net, net), x, u_from, u_to, cond)
    assert net.calls == 4 and net.rows == 12                                       # bound 4 for K = 4 on S_16
    lv = grid_walk_levels(u_from, u_to, 250, 16, 4)
    ref = x.clone()
    with torch.no_grad():
        for ua, ub in zip(lv[:-1], lv[1:]):
            moved = jump(sched, ref, fam.denoise(ref, ua, cond, unet=fam.unet).float(), ua, ub).float()
            keep = (ub < ua).reshape(-1, *([1] * (x.ndim - 1)))
            ref = torch.where(keep, moved, ref)
    assert torch.allclose(out, ref, atol=1e-5) and torch.equal(out[1], x[1])
    assert not torch.allclose(out[0], ref[2], atol=1e-3)


def test_target_grid_is_validated():
    TDDConfig(k_min=4, k_max=8, eta_max=0.0, target_grid=16).validate("method")
    for bad in ({"target_grid": 2, "eta_max": 0.0},                      # below k_max
                {"target_grid": 300, "eta_max": 0.0},                    # above num_grid
                {"target_grid": 16},                                      # η_max 0.3: s off S_K
                {"target_grid": 16, "eta_max": 0.0, "target_hops": 2}):   # two ways to split at once
        with pytest.raises(ConfigError) as e:
            TDDConfig(**bad).validate("method")
        assert e.value.key == "method.target_grid"


@pytest.mark.parametrize("kind", ["edm", "vp"])
def test_teacher_target_solves_the_whole_jump(kind):
    """teacher_target: x_target is the teacher solver t → s (teacher_substeps calls), no target network call.
    With student = teacher, w = 1 and one substep the student's jump IS the teacher's DDIM step t → s, so the loss
    is 0 on every row; the bootstrapped target (t_n, then θ⁻'s jump) is not, on rows with s < t_n."""
    fam = ToyFamily(kind)
    x0, emb = _batch(kind, b=6)
    cond = fam.encode_conditioning({"emb": emb})
    kw = dict(k_min=4, k_max=4, eta_max=0.0, p_uncond=0.0, guidance_min_range=[1.0, 1.0],
              guidance_max_range=[1.0, 1.0])
    net = CountingNet(fam.unet)
    out = TDD(TDDConfig(teacher_target=True, **kw), fam).training_step(
        x0, cond, StaticRoles(net, net), torch.Generator().manual_seed(0))
    assert out.loss.item() == pytest.approx(0.0, abs=1e-6) and net.calls == 2     # teacher + student
    assert not out.stats["target_skipped"].any()
    boot = TDD(TDDConfig(**kw), fam).training_step(x0, cond, StaticRoles(net, net), torch.Generator().manual_seed(0))
    assert boot.loss.item() > 1e-6
    teacher, student = CountingNet(fam.unet), CountingNet(copy.deepcopy(fam.unet))
    kw["guidance_max_range"] = [2.0, 2.0]
    TDD(TDDConfig(teacher_target=True, teacher_substeps=3, **kw), fam).training_step(
        x0, cond, StaticRoles(student, teacher), torch.Generator().manual_seed(0))
    assert teacher.calls == 3 and teacher.rows == 36 and student.calls == 1      # 3 guided [∅; c] forwards


def test_teacher_target_is_validated():
    TDDConfig(teacher_target=True, teacher_substeps=6).validate("method")
    for bad in ({"teacher_hop": 2}, {"target_hops": 2}, {"target_grid": 16, "eta_max": 0.0}, {"target_ema": 0.95},
                {"teacher_target": "yes"}):
        with pytest.raises(ConfigError) as e:
            TDDConfig(**{"teacher_target": True, **bad}).validate("method")
        assert e.value.key == "method.teacher_target"
