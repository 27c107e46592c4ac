"""--vae-decoder: a lighter autoencoder for the same latents (families/decoders.py). It decodes exactly what the
family's latents / its scaling factor give, leaves sampling untouched, and is refused (ConfigError on
vae_decoder, before or at load) when made for another latent space or not an autoencoder at all."""
import json
import math

import pytest
import torch

from tdd_video.apps.img2vid import Img2VidSettings, render_img2vid
from tdd_video.apps.txt2img import Txt2ImgSettings, render_txt2img
from tdd_video.errors import ConfigError
from tdd_video.families import load_family
from tdd_video.families.decoders import load_decoder


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TDD_VIDEO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def tiny_decoder(path, factor: int, channels: int = 4, seed: int = 0):
    """A small AutoencoderTiny upsampling `factor`× (log2(factor) + 1 blocks), saved as a diffusers folder."""
    from diffusers import AutoencoderTiny
    n = int(math.log2(factor)) + 1
    torch.manual_seed(seed)
    AutoencoderTiny(latent_channels=channels, encoder_block_out_channels=(8,) * n, decoder_block_out_channels=(8,) * n,
                    num_encoder_blocks=(1,) * n, num_decoder_blocks=(1,) * n).save_pretrained(path)
    return str(path)


def fast(tmp_path, **kw):
    base = dict(model="tiny", steps=2, frames=2, progress=False, out=str(tmp_path / "out.gif"), eta=0.0)
    base.update(kw)
    return Img2VidSettings(**base)


def test_img2vid_decodes_with_the_chosen_decoder_and_samples_the_same(tmp_path):
    fam = load_family("svd", "tiny")
    dec_path = tiny_decoder(tmp_path / "dec", fam.vae_scale_factor)
    plain = render_img2vid(fast(tmp_path))
    light = render_img2vid(fast(tmp_path, vae_decoder=dec_path, out=str(tmp_path / "light.gif")))
    assert torch.equal(plain.latents, light.latents)                 # the decoder does not touch sampling
    assert light.frames.shape == plain.frames.shape
    assert not torch.allclose(light.frames, plain.frames)             # ...but it is what decoded the frames
    from diffusers import AutoencoderTiny
    dec = AutoencoderTiny.from_pretrained(dec_path)
    z = light.latents[0] / dec.config.scaling_factor                  # frame-wise: [F, 4, h, w]
    want = dec.decode(z).sample.float().clamp(-1, 1)
    assert torch.allclose(light.frames, want, atol=1e-5)


def test_decoders_for_another_latent_space_are_refused(tmp_path):
    fam = load_family("svd", "tiny")
    f = fam.vae_scale_factor
    with pytest.raises(ConfigError, match="16-channel latents") as e:
        load_decoder(tiny_decoder(tmp_path / "c16", f, channels=16), fam)
    assert e.value.key == "vae_decoder"
    with pytest.raises(ConfigError, match=f"upsamples latents {2 * f}x but this model's VAE does {f}x"):
        load_decoder(tiny_decoder(tmp_path / "x2", 2 * f), fam)
    not_vae = tmp_path / "unet"
    not_vae.mkdir()
    (not_vae / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ConfigError, match="holds a UNet2DConditionModel"):
        load_decoder(str(not_vae), fam)
    empty = tmp_path / "empty"
    empty.mkdir()
    for spec, text in [(str(empty), "no config.json"), (str(tmp_path / "missing"), "no such folder")]:
        with pytest.raises(ConfigError, match=text) as e:       # checked before any model loads
            render_img2vid(fast(tmp_path, vae_decoder=spec))
        assert e.value.key == "vae_decoder"


def test_txt2img_decoder_is_used_for_the_render_only(tmp_path):
    fam = load_family("sdxl", "tiny")
    dec_path = tiny_decoder(tmp_path / "dec", fam.vae_scale_factor)
    s = dict(model="tiny", lora="none", steps=1, progress=False, eta=0.0, prompts=["a red circle"])
    plain = render_txt2img(Txt2ImgSettings(out=str(tmp_path / "a.png"), **s), family=fam)
    light = render_txt2img(Txt2ImgSettings(out=str(tmp_path / "b.png"), vae_decoder=dec_path, **s), family=fam)
    assert fam.decoder is None                                        # the caller's family is left as it was
    assert torch.equal(plain.latents, light.latents) and not torch.allclose(plain.images, light.images)


def test_cli_flag_help_and_one_line_error(tmp_path, capsys):
    from tdd_video.cli import img2vid, txt2img
    for cli in (img2vid, txt2img):
        assert "--vae-decoder" in cli.build_parser().format_help()
    assert img2vid.main(["--model", "tiny", "--vae-decoder", str(tmp_path / "nope"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --vae-decoder: no such folder")


def test_tiny_decoder_tool_builds_a_decoder_the_cli_accepts(tmp_path):
    """tools/zoo/tiny_decoder.py: a short build writes a diffusers AutoencoderTiny that load_decoder accepts for the
    toy teacher (same latent channels and factor), a build record, and a card; --eval-only re-measures the same
    fidelity (deterministic)."""
    from tdd_video.zoo import zoo_path
    from tools.zoo.tiny_decoder import main
    out = tmp_path / "tiny"
    assert main(["--out", str(out), "--steps", "3", "--clips", "4", "--heldout", "2", "--no-progress"]) == 0
    assert (out / "build.json").is_file() and "PSNR" in (out / "MODEL_CARD.md").read_text()
    fam = load_family("svd", str(zoo_path("toy-svd")))
    assert type(load_decoder(str(out), fam)).__name__ == "AutoencoderTiny"
    first = (out / "MODEL_CARD.md").read_text().split("| decode time")[0]
    assert main(["--out", str(out), "--eval-only", "--heldout", "2"]) == 0
    assert (out / "MODEL_CARD.md").read_text().split("| decode time")[0] == first


def test_shipped_toy_tiny_decoder_is_close_to_the_temporal_decoder():
    """The zoo's distilled tiny decoder (26.2 dB to the toy VAE's temporal decoder on 64 held-out clips) decodes
    held-out clips within 24 dB of the temporal decoder; an untrained one of the same architecture does not."""
    from diffusers import AutoencoderTiny

    from tdd_video.zoo import zoo_path
    from tools.zoo.tiny_decoder import evaluate, tiny_decoder_config
    fam = load_family("svd", str(zoo_path("toy-svd")))
    shipped = load_decoder(str(zoo_path("toy-svd") / "tiny_decoder"), fam)
    assert evaluate(shipped, fam, 4)["psnr_tiny_vs_temporal_db"] > 24.0
    torch.manual_seed(0)
    untrained = AutoencoderTiny(**tiny_decoder_config(4, fam.vae_scale_factor)).eval()
    assert evaluate(untrained, fam, 4)["psnr_tiny_vs_temporal_db"] < 20.0
