"""Pure data-pipeline logic: clip plans, fps_id, buckets, sampler sharding/resume, config errors."""
import numpy as np
import pytest
import torch

from tdd_video.data.clips import fps_id_for, frame_window, plan_clip, round_half_up, stride_for
from tdd_video.data.config import VideoDataConfig
from tdd_video.data.sampler import ShardedBatchSampler, VideoLoader
from tdd_video.data.transforms import bucket_batches, nearest_bucket, resize_crop
from tdd_video.errors import ConfigError


# ----------------------------------------------------------------- clip plans and fps_id
@pytest.mark.parametrize("src,target,stride", [(30, 7, 4), (24, 7, 3), (25, 6, 4), (8, 7, 1), (60, 8, 8),
                                               (30, 6, 5), (13, 2, 7), (5, 7, 1)])
def test_stride_from_target_fps(src, target, stride):
    assert stride_for(src, target) == stride


def test_round_half_up_not_bankers():
    assert round_half_up(6.5) == 7 and round_half_up(7.5) == 8 and round_half_up(2.49) == 2


@pytest.mark.parametrize("src,target,fps_id", [(30, 7, 7),     # stride 4 -> 7.5 fps -> round 8 -> 7
                                               (24, 7, 7),     # stride 3 -> 8 fps -> 7
                                               (25, 6, 5),     # stride 4 -> 6.25 -> 5
                                               (8, 7, 7)])     # stride 1 -> 8 fps -> 7
def test_fps_id_from_real_fps(src, target, fps_id):
    plan = plan_clip(200, src, 14, target_fps=target, start_mode="zero")
    assert plan.fps_id == fps_id
    assert plan.fps == pytest.approx(src / plan.stride)
    assert fps_id_for(7.5) == 7 and fps_id_for(0.4) == 0


def test_exact_indices_fixed_stride_and_modes():
    zero = plan_clip(100, 30, 5, stride=3, start_mode="zero")
    assert zero.indices == (0, 3, 6, 9, 12) and zero.stride == 3
    center = plan_clip(100, 30, 5, stride=3, start_mode="center")
    # span 13 frames, slack 87 -> first = 43
    assert center.indices == (43, 46, 49, 52, 55)
    rng = np.random.default_rng(0)
    starts = {plan_clip(20, 30, 5, stride=3, rng=rng).indices[0] for _ in range(300)}
    assert starts == set(range(0, 8))  # every start that fits (20 - 13 + 1 = 8), nothing beyond


def test_random_start_is_seeded():
    a = [plan_clip(500, 30, 14, target_fps=7, rng=np.random.default_rng(5)).indices for _ in range(3)]
    assert a[0] == a[1] == a[2]
    assert plan_clip(500, 30, 14, target_fps=7, rng=np.random.default_rng(6)).indices != a[0]


def test_manifest_start_end_window():
    assert frame_window(300, 30, 2.0, 5.0) == (60, 150)
    plan = plan_clip(300, 30, 4, stride=2, start_sec=2.0, end_sec=5.0, start_mode="zero")
    assert plan.indices == (60, 62, 64, 66)
    for _ in range(50):
        p = plan_clip(300, 30, 4, stride=2, start_sec=2.0, end_sec=5.0, rng=np.random.default_rng(_))
        assert p.indices[0] >= 60 and p.indices[-1] < 150


def test_short_policy_reduce_stride_then_skip_never_repeats():
    # 14 frames at stride 4 need 53 source frames; 30 frames -> stride 2 fits (27 frames)
    plan = plan_clip(30, 28, 14, target_fps=7, start_mode="zero", short_policy="reduce_stride")
    assert plan.stride == 2 and plan.fps_id == round_half_up(14) - 1
    assert len(set(plan.indices)) == 14 and max(plan.indices) < 30
    assert plan_clip(30, 28, 14, target_fps=7, start_mode="zero", short_policy="reduce_stride",
                     min_stride=3) is None          # floor 3 does not fit -> skip
    assert plan_clip(30, 28, 14, target_fps=7, start_mode="zero", short_policy="skip") is None
    assert plan_clip(10, 28, 14, target_fps=7, start_mode="zero") is None  # fewer frames than clip
    assert plan_clip(14, 28, 14, target_fps=7, start_mode="zero").indices == tuple(range(14))


# ----------------------------------------------------------------- spatial and buckets
@pytest.mark.parametrize("src_hw", [(90, 160), (160, 90), (50, 50), (33, 200)])
def test_resize_crop_covers_target_without_bars(src_hw):
    frames = np.full((2, *src_hw, 3), 200, np.uint8)
    out = resize_crop(frames, 32, 48, "random", np.random.default_rng(0))
    assert out.shape == (2, 3, 32, 48)
    assert torch.allclose(out, torch.full_like(out, 200 / 127.5 - 1), atol=1e-6)  # no black bars


def test_resize_crop_keeps_aspect_and_centres():
    # a portrait frame with a vertical line in its centre column stays centred and thin
    frames = np.zeros((1, 128, 64, 3), np.uint8)
    frames[:, :, 31:33] = 255
    out = resize_crop(frames, 32, 32, "center")  # scale 0.5 -> 64x32, centre crop rows 16..48
    col = out[0, 0].mean(0)
    assert col.argmax().item() in (15, 16) and (col > 0).sum() <= 4
    flipped = resize_crop(frames[:, :, ::-1], 32, 32, "center", flip=True)
    assert torch.allclose(flipped, out)


def test_nearest_bucket_landscape_portrait():
    buckets = [(576, 1024), (320, 576), (1024, 576), (576, 320)]
    assert nearest_bucket(1080, 1920, buckets) == 0
    assert nearest_bucket(1920, 1080, buckets) == 2
    assert nearest_bucket(240, 432, buckets) in (0, 1)   # 16:9-ish either landscape bucket
    assert nearest_bucket(400, 1000, buckets[:2] + [(256, 768)]) == 2


def test_bucket_batches_are_single_bucket():
    bucket_of = [0, 1, 0, 1, 1, 0, 2, 0, 1]
    batches = bucket_batches(bucket_of, list(range(9)), 2)
    assert all(len({bucket_of[i] for i in b}) == 1 for b in batches)
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4, 5, 7, 8]


# ----------------------------------------------------------------- sampler: sharding and resume
def test_ranks_are_disjoint_and_cover():
    bucket_of = [i % 3 for i in range(61)]
    seen = []
    for rank in range(4):
        s = ShardedBatchSampler(61, 3, bucket_of, rank=rank, world_size=4, seed=7)
        batches = [[k.index for k in b] for b in s]
        assert all(len({bucket_of[i] for i in b}) == 1 for b in batches)
        seen.append({i for b in batches for i in b})
        assert len(batches) == len(s)
    lens = {len(x) for x in seen}
    assert len(lens) == 1                     # same number of samples per rank (lock step)
    for a in range(4):
        for b in range(a + 1, 4):
            assert not (seen[a] & seen[b])
    assert len(set().union(*seen)) >= 61 - 4 * 3 * 3


def test_epochs_reshuffle_and_seed_determinism():
    a = ShardedBatchSampler(20, 2, seed=1)
    e0 = [[k.index for k in b] for b in a]
    a.set_position(1)
    e1 = [[k.index for k in b] for b in a]
    b = ShardedBatchSampler(20, 2, seed=1)
    assert e0 == [[k.index for k in x] for x in b] and e0 != e1


class _Echo(torch.utils.data.Dataset):
    def __len__(self):
        return 40

    def __getitem__(self, key):
        info = torch.utils.data.get_worker_info()
        return {"index": key.index, "epoch": key.epoch, "worker": info.id if info else -1}


def _collate(items):
    return {k: torch.tensor([it[k] for it in items]) for k in items[0]}


def test_workers_disjoint_and_loader_resume():
    def loader():
        return VideoLoader(_Echo(), ShardedBatchSampler(40, 4, seed=3, rank=1, world_size=2), _collate,
                           num_workers=2)

    full = loader()
    ref = [b for _ in range(2) for b in full]  # two epochs
    by_worker = {}
    for b in ref[:5]:
        by_worker.setdefault(int(b["worker"][0]), set()).update(b["index"].tolist())
    assert len(by_worker) == 2 and not (by_worker[0] & by_worker[1])
    part = loader()
    it = iter(part)
    got = [next(it) for _ in range(3)]
    state = part.state_dict()
    assert state["batches_consumed"] == 3 and state["samples_consumed"] == 12
    resumed = loader()
    resumed.load_state_dict(state)
    got += [b for b in resumed] + [b for b in resumed]
    assert [b["index"].tolist() for b in got] == [b["index"].tolist() for b in ref[:len(got)]]
    assert [b["epoch"][0].item() for b in got][-1] == 1
    with pytest.raises(ValueError, match="seed"):
        loader().load_state_dict(dict(state, seed=99))


# ----------------------------------------------------------------- config
def test_config_from_dict_and_validation_errors():
    cfg = VideoDataConfig.from_dict({"path": "x", "num_frames": 25, "buckets": [[320, 576], [576, 320]]}).validate()
    assert cfg.sizes() == [(320, 576), (576, 320)]
    with pytest.raises(ConfigError, match="data.num_framez"):
        VideoDataConfig.from_dict({"num_framez": 3})
    bad = [({"short_policy": "repeat"}, "data.short_policy"), ({"height": 100}, "data.height"),
           ({"max_failure_fraction": 1.5}, "data.max_failure_fraction"), ({"stride": 2}, "data.target_fps"),
           ({"num_workers": -1}, "data.num_workers"), ({"buckets": [[320]]}, r"data.buckets\[0\]"),
           ({"use_cache": True}, "data.cache_dir")]
    for override, key in bad:
        with pytest.raises(ConfigError, match=key):
            VideoDataConfig.from_dict({"path": "x", **override}).validate()
