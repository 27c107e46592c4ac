"""Strict full-UNet checkpoint loading (AnimateLCM-SVD-xt-1.1 style), on tiny UNets (issue 6)."""
import pytest
import torch
from safetensors.torch import save_file

from tdd_video.families.tiny import tiny_sdxl_unet, tiny_svd_unet
from tdd_video.unet_checkpoint import CheckpointError, check_unet_checkpoint, load_unet_checkpoint


@pytest.fixture(scope="module")
def source_state():
    return {k: v.clone().contiguous() for k, v in tiny_svd_unet(seed=1).state_dict().items()}


def _same(unet, state):
    own = unet.state_dict()
    return all(torch.equal(own[k], v.to(own[k].dtype)) for k, v in state.items())


@pytest.mark.parametrize("suffix", [".safetensors", ".bin", ".pt"])
def test_loads_full_state_dict(tmp_path, source_state, suffix):
    path = tmp_path / f"unet{suffix}"
    if suffix == ".safetensors":
        save_file(source_state, str(path))
    else:
        torch.save(source_state, path)
    unet = tiny_svd_unet(seed=0)
    assert not _same(unet, source_state)
    report = load_unet_checkpoint(unet, path)
    assert report.ok and report.loaded == len(source_state)
    assert _same(unet, source_state)


def test_prefixed_keys_and_bf16_model(tmp_path, source_state):
    path = tmp_path / "prefixed.safetensors"
    save_file({"unet." + k: v for k, v in source_state.items()}, str(path))
    unet = tiny_svd_unet(seed=0).to(torch.bfloat16)
    report = load_unet_checkpoint(unet, path)
    assert report.stripped_prefix == "unet."
    assert next(unet.parameters()).dtype == torch.bfloat16 and _same(unet, source_state)


def test_missing_unexpected_and_mismatched_are_refused(tmp_path, source_state):
    keys = sorted(source_state)
    bad = dict(source_state)
    for k in keys[:7]:
        del bad[k]
    bad["extra.weight"] = torch.zeros(3)
    k_shape = keys[10]
    bad[k_shape] = torch.zeros(*[s + 1 for s in source_state[k_shape].shape])
    path = tmp_path / "bad.safetensors"
    save_file(bad, str(path))
    unet = tiny_svd_unet(seed=0)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_unet_checkpoint(unet, path)
    msg = str(err.value)
    assert "7 missing key(s)" in msg and keys[0] in msg and "(+2 more)" in msg
    assert "1 unexpected key(s)" in msg and "extra.weight" in msg
    assert "1 shape mismatch(es)" in msg and k_shape in msg
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())   # untouched
    report = load_unet_checkpoint(unet, path, strict=False)                      # non-strict: partial
    assert not report.ok and report.loaded == len(source_state) - 8
    assert check_unet_checkpoint(unet, path).missing == report.missing


def test_wrong_model_lora_and_broken_files(tmp_path):
    wrong = tmp_path / "sdxl.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_sdxl_unet(seed=0).state_dict().items()}, str(wrong))
    unet = tiny_svd_unet(seed=0)
    with pytest.raises(CheckpointError, match="missing key"):
        load_unet_checkpoint(unet, wrong)
    lora = tmp_path / "lora.safetensors"
    save_file({"down_blocks.0.attentions.0.to_q.lora_A.weight": torch.zeros(4, 32)}, str(lora))
    with pytest.raises(CheckpointError, match="LoRA"):
        load_unet_checkpoint(unet, lora)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(wrong.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="could not read"):
        load_unet_checkpoint(unet, truncated)
    with pytest.raises(CheckpointError, match="not found"):
        load_unet_checkpoint(unet, tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="suffix"):
        (tmp_path / "x.ckpt2").write_bytes(b"")
        load_unet_checkpoint(unet, tmp_path / "x.ckpt2")
    nan_state = {k: v.clone().contiguous() for k, v in unet.state_dict().items()}
    first = sorted(nan_state)[0]
    nan_state[first] = torch.full_like(nan_state[first], float("nan"))
    nan_path = tmp_path / "nan.safetensors"
    save_file(nan_state, str(nan_path))
    with pytest.raises(CheckpointError, match="non-finite"):
        load_unet_checkpoint(unet, nan_path)


def test_diffusers_unet_folder(tmp_path, source_state):
    src = tiny_svd_unet(seed=1)
    src.save_pretrained(tmp_path / "unet")
    unet = tiny_svd_unet(seed=0)
    assert load_unet_checkpoint(unet, tmp_path / "unet").ok and _same(unet, source_state)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="folder without"):
        load_unet_checkpoint(unet, tmp_path / "empty")
