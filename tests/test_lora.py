"""LoRA on the shared base (docs/math.md §9): presets, switching, EMA, save/load with alpha, stock diffusers
loading, refusal of foreign LoRAs, fused export."""
import json

import pytest
import torch
from peft.tuners.tuners_utils import check_target_module_exists
from safetensors import safe_open
from safetensors.torch import save_file

from tdd_video import lora
from tdd_video.errors import ConfigError
from tdd_video.families import load_family
from tdd_video.families.sdxl import SDXLFamily
from tdd_video.families.tiny import save_tiny_sdxl


def _svd(seed=0):
    """Tiny SVD with a frozen UNet. (Frozen matters for bitwise comparisons: torch.matmul folds batch
    dims differently when a weight requires grad, which changes rounding at the 1e-6 level.)"""
    fam = load_family("svd", f"tiny:{seed}")
    fam.unet.requires_grad_(False)
    return fam


def _svd_inputs(fam, seed=0):
    g = torch.Generator().manual_seed(seed)
    first = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    cond = fam.encode_conditioning({"first_frame": first}, generator=g, train=False)
    x = torch.randn(1, 8, 4, 16, 16, generator=g) * 3
    return x, torch.tensor([0.4], dtype=torch.float64), cond


def _randomize(unet, name, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora.trainable_parameters(unet, name):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def _targets(unet, preset):
    cfg = lora.lora_config(4, None, preset)
    return {n for n, m in unet.named_modules() if isinstance(m, torch.nn.Linear) and check_target_module_exists(cfg, n)}


def test_presets_select_expected_modules():
    unet = _svd().unet
    spatial, temporal = _targets(unet, "spatial"), _targets(unet, "temporal")
    attn, attn_ff = _targets(unet, "attn"), _targets(unet, "attn_ff")
    assert spatial and temporal and not (spatial & temporal)
    assert all("temporal_transformer_blocks" in n for n in temporal)
    assert not any("temporal_transformer_blocks" in n for n in spatial)
    assert spatial | temporal == attn_ff and attn < attn_ff
    assert all(n.rsplit(".", 2)[-2:] != ["net", "2"] for n in attn)
    with pytest.raises(ConfigError, match="allowed: attn"):
        lora.add_lora(unet, preset="everything")


def test_temporal_preset_on_sdxl_is_refused():
    fam = load_family("sdxl")
    with pytest.raises(ConfigError, match="matched no module"):
        lora.add_lora(fam.unet, preset="temporal", rank=2)


def test_zero_init_switching_and_teacher_without_copy():
    fam = _svd()
    x, u, cond = _svd_inputs(fam)
    with torch.no_grad():
        base = fam.denoise(x, u, cond)
    lora.add_lora(fam.unet, "student", rank=4, alpha=2, preset="attn_ff")
    with torch.no_grad():
        assert torch.equal(fam.denoise(x, u, cond), base)           # B = 0: exactly the base
    _randomize(fam.unet, "student")
    lora.add_lora(fam.unet, "ema", init_from="student", trainable=False)
    n_base = sum(p.numel() for n, p in fam.unet.named_parameters() if "lora_" not in n)
    grads = {n: p.requires_grad for n, p in fam.unet.named_parameters()}
    with torch.no_grad():
        student = fam.denoise(x, u, cond)
        with lora.adapters_disabled(fam.unet):
            teacher = fam.denoise(x, u, cond)
        with lora.use_adapter(fam.unet, "ema"):
            target = fam.denoise(x, u, cond)
        again = fam.denoise(x, u, cond)
    assert not torch.allclose(student, base, atol=1e-4)
    assert torch.equal(teacher, base) and torch.equal(again, student)
    assert torch.allclose(target, student, atol=1e-6)               # ema initialised from the student
    assert {n: p.requires_grad for n, p in fam.unet.named_parameters()} == grads   # switching keeps grads
    assert sum(p.numel() for n, p in fam.unet.named_parameters() if "lora_" not in n) == n_base
    train = lora.trainable_parameters(fam.unet, "student")
    assert all(p.requires_grad for p in train)
    assert not any(p.requires_grad for n, p in fam.unet.named_parameters() if "student" not in n)


def test_ema_of_lora_weights_is_fp32_over_a_bf16_base():
    """The target network's EMA (engine.ema) over bf16 adapter weights keeps an fp32 shadow with the exact math."""
    from tdd_video.engine.ema import EMA
    unet = _svd().unet.to(torch.bfloat16)
    lora.add_lora(unet, "student", rank=4, preset="attn", dtype=torch.bfloat16)
    params = list(lora._adapter_params(unet, "student").items())
    ema = EMA(params, decay=0.9)
    before = {n: v.clone() for n, v in ema.shadow.items()}
    _randomize(unet, "student", seed=1)
    ema.update(params)
    for n, p in params:
        assert ema.shadow[n].dtype == torch.float32
        assert torch.allclose(ema.shadow[n], 0.9 * before[n] + 0.1 * p.detach().float(), atol=1e-7)
    with ema.swapped_in(params):
        assert all(torch.equal(p.detach(), ema.shadow[n].to(p.dtype)) for n, p in params)


def test_save_load_roundtrip_exact_with_alpha_not_rank(tmp_path):
    fam = _svd(0)
    x, u, cond = _svd_inputs(fam)
    lora.add_lora(fam.unet, "student", rank=4, alpha=1, preset="attn_ff")
    _randomize(fam.unet, "student")
    with torch.no_grad():
        ref = fam.denoise(x, u, cond)
    path = lora.save_lora(fam.unet, tmp_path / "svd_lora.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    peft_meta, ours = json.loads(meta["lora_adapter_metadata"]), json.loads(meta["tdd_video"])
    assert peft_meta["unet.r"] == 4 and peft_meta["unet.lora_alpha"] == 1
    assert ours["family"] == "svd" and ours["base_fingerprint"] == lora.unet_fingerprint(fam.unet)
    fresh = _svd(0)
    lora.load_lora(fresh.unet, path, "student", trainable=True)   # same requires_grad state -> same kernels
    saved, loaded = lora._adapter_params(fam.unet, "student"), lora._adapter_params(fresh.unet, "student")
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    with torch.no_grad():
        assert torch.equal(fresh.denoise(x, u, cond), ref)
    half = _svd(0)
    lora.load_lora(half.unet, path, "student", scale=0.5)
    with torch.no_grad():
        assert not torch.allclose(half.denoise(x, u, cond), ref, atol=1e-5)


def test_rescaled_file_at_scale_one_is_the_original_at_that_scale(tmp_path):
    """lora.rescale_lora_file folds a strength into lora_B: the new file at scale 1 denoises like the original at
    scale 0.8, records the strength, leaves lora_A untouched, and refuses a non-positive strength."""
    fam = _svd(0)
    x, u, cond = _svd_inputs(fam)
    lora.add_lora(fam.unet, "student", rank=4, alpha=2, preset="attn_ff")
    _randomize(fam.unet, "student")
    src = lora.save_lora(fam.unet, tmp_path / "a.safetensors")
    dst = lora.rescale_lora_file(src, tmp_path / "b", 0.8)
    (a, _, _), (b, _, ours) = lora.read_lora(src), lora.read_lora(dst)
    assert ours["strength"] == pytest.approx(0.8) and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) if ".lora_A." in k else torch.allclose(b[k], 0.8 * a[k]) for k in a)
    outs = []
    for path, scale in ((src, 0.8), (dst, 1.0), (src, 1.0)):
        f = _svd(0)
        lora.load_lora(f.unet, path, "student", scale=scale)
        with torch.no_grad():
            outs.append(f.denoise(x, u, cond))
    assert torch.allclose(outs[0], outs[1], atol=1e-5) and not torch.allclose(outs[1], outs[2], atol=1e-4)
    with pytest.raises(ConfigError):
        lora.rescale_lora_file(src, tmp_path / "c", 0.0)
    with pytest.raises(ConfigError, match="lora_scale"):               # every loader: no negative strength
        lora.load_lora(_svd(0).unet, src, "student", scale=-0.5)


def test_stock_diffusers_load_lora_weights_gives_same_strength(tmp_path):
    from diffusers import StableDiffusionXLPipeline
    folder = save_tiny_sdxl(tmp_path / "sdxl", seed=0)
    fam = load_family("sdxl", folder)
    lora.add_lora(fam.unet, "student", rank=4, alpha=1, preset="attn")   # scale alpha/r = 0.25
    _randomize(fam.unet, "student", seed=2)
    path = lora.save_lora(fam.unet, tmp_path / "sdxl_lora.safetensors")
    cond = fam.encode_conditioning({"caption": ["a red ball"]})
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    u = torch.tensor([0.6], dtype=torch.float64)
    with torch.no_grad():
        ours = fam.denoise(x, u, cond)
        with lora.adapters_disabled(fam.unet):
            base = fam.denoise(x, u, cond)
    pipe = StableDiffusionXLPipeline.from_pretrained(folder)
    pipe.load_lora_weights(str(path))
    stock = SDXLFamily.from_pipeline(pipe)
    with torch.no_grad():
        theirs = stock.denoise(x, u, cond)
    assert (ours - base).abs().max() > 1e-3                 # the LoRA does something
    assert torch.allclose(theirs, ours, atol=1e-5)           # ... and stock diffusers applies the same strength
    # without the alpha metadata (what the public TDD LoRA ships) diffusers would apply alpha = r: 4x too strong
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    save_file(state, str(tmp_path / "no_alpha.safetensors"))
    pipe.unload_lora_weights()
    pipe.load_lora_weights(str(tmp_path / "no_alpha.safetensors"))
    with torch.no_grad():
        too_strong = stock.denoise(x, u, cond)
    assert not torch.allclose(too_strong, ours, atol=1e-3)


def test_foreign_lora_refused(tmp_path):
    sdxl = load_family("sdxl")
    lora.add_lora(sdxl.unet, "student", rank=2, preset="attn")
    sdxl_path = lora.save_lora(sdxl.unet, tmp_path / "sdxl.safetensors")
    svd = _svd()
    with pytest.raises(ConfigError, match="another base"):
        lora.load_lora(svd.unet, sdxl_path)
    # same architecture, keys missing and unknown, no tdd metadata: refused with a list of keys
    src = _svd()
    lora.add_lora(src.unet, "student", rank=2, preset="attn")
    good = lora.save_lora(src.unet, tmp_path / "svd.safetensors")
    with safe_open(str(good), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    dropped = sorted(k for k in state if "up_blocks" in k)
    for k in dropped:
        del state[k]
    state["unet.not_a_block.to_q.lora_A.weight"] = torch.zeros(2, 32)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ConfigError, match=r"missing module\(s\).*unexpected.*not_a_block"):
        lora.load_lora(_svd().unet, tmp_path / "bad.safetensors")
    assert "student" not in lora.adapter_names(svd.unet)


def test_fused_export_is_plain_unet_and_matches(tmp_path):
    from diffusers import UNetSpatioTemporalConditionModel
    fam = _svd()
    x, u, cond = _svd_inputs(fam)
    lora.add_lora(fam.unet, "student", rank=4, alpha=8, preset="attn_ff_conv")
    _randomize(fam.unet, "student", seed=3)
    with torch.no_grad():
        ref = fam.denoise(x, u, cond)
    folder = lora.export_fused_unet(fam.unet, tmp_path / "fused_unet")
    plain = UNetSpatioTemporalConditionModel.from_pretrained(folder)
    assert not any("lora" in n or "base_layer" in n for n in plain.state_dict())
    assert "student" in lora.adapter_names(fam.unet)               # the training UNet keeps its adapter
    with torch.no_grad():
        fused = fam.denoise(x, u, cond, unet=plain)
    assert torch.allclose(fused, ref, atol=1e-4)
