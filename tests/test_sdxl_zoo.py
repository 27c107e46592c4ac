"""The toy SDXL zoo entry: loads offline in stock diffusers; its TDD student re-renders the recorded reference.
Skips until tdd_video/zoo/toy-sdxl (and its student) are committed."""
import json
import re
from pathlib import Path

import pytest
import torch

from tdd_video.zoo import ZOO_DIR, ZooModelNotFound, is_zoo_name, resolve_model

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py

ROOT = Path(__file__).resolve().parents[1]


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


def test_shipped_recipe_trains_the_text_side_and_sweeps_guidance():
    from tdd_video.engine.config import load_dataclass_recipe
    from tools.zoo.build_sdxl import ToySDXLConfig
    cfg = load_dataclass_recipe(ToySDXLConfig, ROOT / "configs" / "toy" / "pretrain_sdxl.yaml")
    assert cfg == ToySDXLConfig()                 # the dataclass defaults are the shipped recipe
    assert cfg.text_train and cfg.text_lr > 0 and cfg.text_train_layers == "all"
    assert cfg.output == "tdd_video/zoo/toy-sdxl" and cfg.eval_steps == 25
    assert 1.0 in cfg.eval_guidances and len(cfg.eval_guidances) >= 3 and cfg.eval_images >= 48


@needs_teacher
def test_teacher_card_tells_the_truth_about_its_text_encoders():
    """FROZEN in the card ⇔ the shipped encoders are the seed's random ones; TRAINED ⇔ they are not."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from tdd_video.families.tiny import tiny_text_encoders
    card = (TEACHER / "MODEL_CARD.md").read_text()
    line = next(ln for ln in card.split("\n- ") if ln.startswith("Text encoders"))
    seed = int(re.search(r"\(seed\s+(\d+)\)", line).group(1))
    e1, e2 = tiny_text_encoders(seed)
    s1 = CLIPTextModel.from_pretrained(str(TEACHER / "text_encoder")).state_dict()
    s2 = CLIPTextModelWithProjection.from_pretrained(str(TEACHER / "text_encoder_2")).state_dict()
    random = all(torch.equal(v, s1[k]) for k, v in e1.state_dict().items()) and \
        all(torch.equal(v, s2[k]) for k, v in e2.state_dict().items())
    assert ("FROZEN" in line) == random and ("TRAINED" in line) == (not random)
