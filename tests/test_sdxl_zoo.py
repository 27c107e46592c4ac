"""The toy SDXL zoo entry: loads offline in stock diffusers; its TDD student re-renders the recorded reference.
Skips until tdd_video/zoo/toy-sdxl (and its student) are committed."""
import json

import pytest
import torch

from tdd_video.zoo import ZOO_DIR, ZooModelNotFound, is_zoo_name, resolve_model

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


TEACHER = ZOO_DIR / "toy-sdxl"
STUDENT = TEACHER / "students" / "tdd"
needs_teacher = pytest.mark.skipif(not is_zoo_name("toy-sdxl"), reason="toy-sdxl weights not built yet")
needs_student = pytest.mark.skipif(not (STUDENT / "reference.json").is_file(), reason="toy-sdxl student not built yet")


@needs_teacher
def test_teacher_loads_offline_with_card():
    from diffusers import StableDiffusionXLPipeline
    pipe = StableDiffusionXLPipeline.from_pretrained(str(resolve_model("toy-sdxl")))
    assert pipe.unet.config.addition_embed_type == "text_time"
    card = (TEACHER / "MODEL_CARD.md").read_text()
    assert "python -m tools.zoo.build_sdxl" in card and "PSNR" in card
    size_mb = sum(p.stat().st_size for p in TEACHER.rglob("*") if p.is_file()) / 1e6
    assert size_mb < 30


@needs_student
def test_student_reproduces_reference_render():
    from tools.zoo.sdxl_student import reference_render
    ref = json.loads((STUDENT / "reference.json").read_text())
    got = reference_render(str(TEACHER), str(STUDENT / "pytorch_lora_weights.safetensors"))
    assert got["prompt"] == ref["prompt"] and got["steps"] == ref["steps"]
    assert abs(got["latent_mean"] - ref["latent_mean"]) < 1e-3
    assert abs(got["latent_abs_mean"] - ref["latent_abs_mean"]) < 1e-3 * max(1.0, ref["latent_abs_mean"])
    assert torch.allclose(torch.tensor(got["latent_first"]), torch.tensor(ref["latent_first"]), atol=1e-3)


def test_missing_zoo_name_lists_available():
    with pytest.raises(ZooModelNotFound, match="available"):
        resolve_model("toy-sdxl-missing")
