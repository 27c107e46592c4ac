"""Image-text data for SDXL: folder / manifest / webdataset shards, micro-conditioning, robustness, resume."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tdd_video.data.dataset import DataFailureError
from tdd_video.data.images import ImageDataConfig, build_image_dataset, build_image_loader, resize_crop_image
from tdd_video.data.synthetic_images import adherence, make_images, mean_adherence, parse_caption
from tdd_video.data.webdataset import expand_shards, index_shards, write_shard
from tdd_video.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def ramp(h, w, seed=0):
    """An image whose every column is distinct: R = column index·2, G = row·3, B = seed."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (np.arange(w) * 2)[None, :]
    img[..., 1] = (np.arange(h) * 3)[:, None]
    img[..., 2] = seed
    return img


def png_bytes(img):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def cfg(path, **kw):
    base = dict(path=str(path), height=16, width=16, batch_size=2, num_workers=0, failure_check_after=1000)
    base.update(kw)
    return base


def test_crop_coords_are_offsets_in_resized_frame_and_match_pixels():
    img = ramp(16, 48)                              # already the target height: scale 1, crop is an exact slice
    for seed in range(5):
        rng = np.random.default_rng(seed)
        pix, (top, left) = resize_crop_image(img, 16, 16, True, rng)
        want = torch.from_numpy(img[top:top + 16, left:left + 16]).permute(2, 0, 1).float() / 127.5 - 1
        assert top == 0 and 0 <= left <= 32
        assert torch.equal(pix, want)
    pix, (top, left) = resize_crop_image(img, 16, 16, False, np.random.default_rng(0))
    assert (top, left) == (0, 16)                   # centre crop in eval
    # flip: the reported left is mirrored in the resized frame
    rng = np.random.default_rng(3)
    _, (t0, l0) = resize_crop_image(img, 16, 16, True, np.random.default_rng(3))
    pix, (t1, l1) = resize_crop_image(img, 16, 16, True, rng, flip=True)
    assert l1 == 48 - 16 - l0
    assert torch.equal(pix, (torch.from_numpy(img[:, l0:l0 + 16][:, ::-1].copy()).permute(2, 0, 1).float() / 127.5 - 1))
    # a downscaled image: offsets live in the resized (16 x 32) frame, not the 40 x 80 original
    _, (top, left) = resize_crop_image(ramp(40, 80), 16, 16, True, np.random.default_rng(1))
    assert top == 0 and 0 <= left <= 16


def test_folder_and_manifest_sources_with_sizes(tmp_path):
    (tmp_path / "imgs").mkdir()
    Image.fromarray(ramp(40, 80)).save(tmp_path / "imgs" / "wide.png")
    (tmp_path / "imgs" / "wide.txt").write_text("a wide image\n")
    Image.fromarray(ramp(60, 30)).convert("L").save(tmp_path / "imgs" / "tall_grey.jpg")   # greyscale -> RGB
    batch = next(iter(build_image_loader(cfg(tmp_path / "imgs", train=False))))
    assert batch["pixel_values"].shape == (2, 3, 16, 16) and batch["pixel_values"].abs().max() <= 1
    by_path = {p.rsplit("/", 1)[-1]: i for i, p in enumerate(batch["path"])}
    i, j = by_path["wide.png"], by_path["tall_grey.jpg"]
    assert batch["original_size"][i].tolist() == [40, 80] and batch["original_size"][j].tolist() == [60, 30]
    assert batch["crop_coords"][i].tolist() == [0, 8] and batch["crop_coords"][j].tolist() == [8, 0]
    assert batch["target_size"].tolist() == [[16, 16], [16, 16]]
    assert batch["caption"][i] == "a wide image" and batch["caption"][j] == ""
    # CSV and JSONL manifests, relative paths
    (tmp_path / "m.csv").write_text("path,caption\nimgs/wide.png,from csv\nimgs/tall_grey.jpg,tall\n")
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps({"path": p, "caption": c}) for p, c in
                                                [("imgs/wide.png", "from jsonl"), ("imgs/tall_grey.jpg", "t")]))
    for name, cap in (("m.csv", "from csv"), ("m.jsonl", "from jsonl")):
        ds = build_image_dataset(cfg(tmp_path / name))
        assert ds.records[0].caption == cap and ds[0]["original_size"].tolist() == [40, 80]


def test_webdataset_shards_txt_and_json_captions(tmp_path):
    write_shard(tmp_path / "s" / "00000.tar", [("a.png", png_bytes(ramp(20, 20, 1)), "cap a"),
                                              ("b.png", png_bytes(ramp(24, 32, 2)), "cap b")])
    write_shard(tmp_path / "s" / "00001.tar", [("c.png", png_bytes(ramp(32, 24, 3)), "cap c")], caption_as="json")
    samples, info = index_shards(str(tmp_path / "s"))
    assert [c for _, c in samples] == ["cap a", "cap b", "cap c"] and info["shards"] == 2
    assert len(expand_shards(str(tmp_path / "s" / "{00000..00001}.tar"))) == 2
    ds = build_image_dataset(cfg(tmp_path / "s", train=False))
    items = [ds[i] for i in range(3)]
    assert [it["original_size"].tolist() for it in items] == [[20, 20], [24, 32], [32, 24]]
    assert [int(it["pixel_values"][2].mean().add(1).mul(127.5).round()) for it in items] == [1, 2, 3]
    with pytest.raises(ConfigError, match="cache_dir"):
        build_image_dataset(cfg(tmp_path / "s", source="webdataset", use_cache=True))


def test_bad_images_skipped_counted_and_limit(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for i in range(4):
        Image.fromarray(ramp(32, 32, i)).save(d / f"good{i}.png")
    (d / "zero.png").write_bytes(b"")
    (d / "junk.jpg").write_bytes(b"not an image at all")
    (d / "trunc.png").write_bytes(png_bytes(ramp(32, 32))[:60])
    Image.fromarray(ramp(8, 8)).save(d / "small.png")
    ds = build_image_dataset(cfg(d, min_side=16))
    seen = [ds[i]["path"] for i in range(len(ds))]
    assert all("good" in p for p in seen)
    assert sorted(p.rsplit("/", 1)[-1] for p in ds.stats.examples) == ["junk.jpg", "small.png", "trunc.png", "zero.png"]
    assert set(ds.stats.failures) == {"unreadable", "too_small"}            # counted per attempt, by reason
    assert ds.stats.failed == ds.stats.attempts - len(ds)
    strict = build_image_dataset(cfg(d, min_side=16, max_failure_fraction=0.2, failure_check_after=2))
    with pytest.raises(DataFailureError, match="max_failure_fraction"):
        for i in range(len(strict)):
            strict[i]


def test_loader_resume_and_rank_sharding(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for i in range(12):
        Image.fromarray(ramp(20 + i, 30, i)).save(d / f"{i:02d}.png")
    a = build_image_loader(cfg(d), seed=3)
    it = iter(a.infinite())
    first = [next(it) for _ in range(4)]
    state = a.state_dict()
    nxt = next(it)
    b = build_image_loader(cfg(d), seed=3)
    b.load_state_dict(state)
    again = next(iter(b.infinite()))
    assert nxt["path"] == again["path"] and torch.equal(nxt["pixel_values"], again["pixel_values"])
    assert torch.equal(nxt["crop_coords"], again["crop_coords"])
    r0 = {p for bt in build_image_loader(cfg(d), rank=0, world_size=2) for p in bt["path"]}
    r1 = {p for bt in build_image_loader(cfg(d), rank=1, world_size=2) for p in bt["path"]}
    assert r0 and r1 and not (r0 & r1)
    assert first[0]["pixel_values"].shape == (2, 3, 16, 16)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="data.height"):
        ImageDataConfig(height=20).validate()
    with pytest.raises(ConfigError, match="data.nope"):
        ImageDataConfig.from_dict({"nope": 1})
    with pytest.raises(ConfigError, match="data.path"):
        build_image_dataset({"path": ""})


def test_synthetic_captions_and_exact_adherence_scores():
    imgs, caps = make_images(96, 32, seed=1)
    assert len(set(caps)) == 96
    good = mean_adherence(imgs, caps)
    assert good["colour"] == 1.0 and good["layout"] == 1.0 and good["shape"] > 0.95
    wrong = mean_adherence(imgs, caps[1:] + caps[:1])
    assert wrong["layout"] < 0.3
    flat = np.full((32, 32, 3), 128, np.uint8)
    assert adherence(flat, caps[0])["colour"] == 0.0
    i2, c2 = make_images(96, 32, seed=1)
    assert np.array_equal(i2, imgs) and c2 == caps
    with pytest.raises(ValueError, match="caption"):
        parse_caption("a purple triangle")


def test_latent_and_text_cache_roundtrip_resume_and_training_batches(tmp_path):
    from tdd_video.data.image_cache import build_image_cache, image_encoder
    from tdd_video.families.sdxl import SDXLFamily
    d = tmp_path / "d"
    d.mkdir()
    for i in range(5):
        Image.fromarray(ramp(40, 64, 40 * i)).save(d / f"{i}.png")
        (d / f"{i}.txt").write_text(f"a red circle {i}")
    (d / "bad.png").write_bytes(b"")
    fam = SDXLFamily.tiny(seed=0)
    c = ImageDataConfig(path=str(d), height=32, width=32)
    index = build_image_cache(image_encoder(fam), c, tmp_path / "cache", dtype="fp32", shard_size=4, progress=False)
    meta = json.loads(index.read_text())
    assert meta["total"] == 5 and len(meta["shards"]) == 2
    skipped = json.loads((tmp_path / "cache" / "shard_00001.json").read_text())["skipped"]
    assert len(skipped) == 1 and "bad.png" in skipped[0]["path"]
    before = (tmp_path / "cache" / "shard_00000.safetensors").stat().st_mtime_ns
    # resume: no rework
    build_image_cache(image_encoder(fam), c, tmp_path / "cache", dtype="fp32", shard_size=4, progress=False)
    assert (tmp_path / "cache" / "shard_00000.safetensors").stat().st_mtime_ns == before
    with pytest.raises(ConfigError, match="other settings"):
        build_image_cache(image_encoder(fam), c, tmp_path / "cache", dtype="fp16", shard_size=4, progress=False)
    batch = next(iter(build_image_loader({"use_cache": True, "cache_dir": str(tmp_path / "cache"), "batch_size": 2,
                                          "num_workers": 0, "height": 32, "width": 32}, seed=0)))
    assert batch["latents"].shape == (2, 4, 8, 8) and batch["prompt_embeds"].shape == (2, 77, 64)
    assert batch["original_size"].tolist()[0] == [40, 64] and batch["crop_coords"].tolist()[0] == [0, 10]
    cached = fam.encode_conditioning(batch)
    fresh = fam.encode_conditioning({"caption": batch["caption"], "original_size": batch["original_size"],
                                     "crop_coords": batch["crop_coords"], "target_size": batch["target_size"]})
    assert torch.allclose(cached.prompt_embeds, fresh.prompt_embeds, atol=1e-5)
    assert torch.allclose(cached.pooled, fresh.pooled, atol=1e-5)
    assert torch.equal(cached.add_time_ids, fresh.add_time_ids)
