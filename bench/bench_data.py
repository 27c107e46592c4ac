"""Data-path benchmarks; one JSON line per result (each with the machine's load average).

    python bench/bench_data.py                 # clips/s: decord vs PyAV vs imageio, 14/25 frames, 1/2 workers
    python bench/bench_data.py --train-ratio   # + training steps/s on the tiny SVD: raw videos vs latent cache
    python bench/bench_data.py --skip-readers --consume-ratio   # loader clips/s ÷ clips/s a training run consumes
    python bench/bench_data.py --skip-readers --real            # real size: 1080p H.264 -> 320x576 clips

Real size (``--real``): ``--real-files`` sources of ``--real-size`` (1920x1080) H.264 made here with the
bundled ffmpeg (x264 preset medium, CRF 23, B-frames as x264 sets them, a keyframe every
``--real-gop-seconds`` s, ``--real-fps`` cycled over the files, ``--real-seconds`` long; content: a
colour 1/f-noise landscape, the amplitude spectrum of natural images, panning 4 px/frame with a
vertical sway and a brightness drift — ~7 Mbit/s, web-like). Clips of ``--real-frames`` frames at
7 fps, 320x576, random start and crop, through the real loader (`build_video_loader`, train mode,
batch 1, ``reader_cache_size`` 1 so that clips open their file as in a large dataset) for each
reader, with and without ``data.decode_resize``, with 1 and 2 workers; configurations interleaved in
rounds. Reported per worker (clips/s ÷ workers, wall clock: on a shared machine a worker
gets only part of a core) and per CPU second the workers used (with psutil: the rate of a worker that has
a core to itself). Also the PSNR of the decode-time-scaled clips against the full-size path (same
samples, same crops).

Source files: ``--files`` H.264 mp4s made here with ffmpeg (imageio-ffmpeg), ``--src-size``
(default 640x360), 24 fps, ``--seconds`` long, x264 CRF 23 with a keyframe every ``--gop``
frames (web video typically has one every 1-2 s; x264's default is 250), smooth panning content
(~web bitrate; the files' Mbit/s is reported). Clips: ``--frames``
frames at 7 fps (stride 3), random start, resized + cropped to 320x576 as in training, through
the real loader (`build_video_loader`, train mode, batch 1). The first clip of each run (worker
start-up, file opening) is not timed. Set OMP_NUM_THREADS=1 on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tdd_video.data.dataset import build_video_loader  # noqa: E402
from tdd_video.data.video_io import write_video  # noqa: E402


def emit(**record) -> None:
    record.setdefault("loadavg", [round(v, 2) for v in os.getloadavg()])
    print(json.dumps(record), flush=True)


def textured_frames(num: int, height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random landscape panning 3 px/frame with a slow brightness drift (web-like bitrate)."""
    from PIL import Image

    g = np.random.default_rng(seed)
    wide = width + 3 * num
    low = g.integers(0, 255, size=(height // 8 + 2, wide // 8 + 2, 3)).astype(np.uint8)
    tex = np.asarray(Image.fromarray(low).resize((wide, height), Image.BICUBIC)).astype(np.float32)
    out = np.empty((num, height, width, 3), np.uint8)
    for i in range(num):
        out[i] = np.clip(tex[:, 3 * i:3 * i + width] + 10 * np.sin(i / 9), 0, 255)
    return out


def make_files(folder: Path, count: int, height: int, width: int, seconds: float, gop: int,
               fps: int = 24) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        path = folder / f"src{k}_{width}x{height}_g{gop}.mp4"
        if not path.exists():
            write_video(textured_frames(int(seconds * fps), height, width, k), path, fps=fps, quality=None,
                        ffmpeg_params=["-g", str(gop), "-crf", "23", "-preset", "medium"])
        paths.append(path)
    return paths


def natural_texture(height: int, width: int, seed: int, alpha: float = 1.15) -> np.ndarray:
    """float32 [height, width, 3] in 0..255: colour noise with amplitude spectrum 1/f^alpha (natural images:
    alpha ~ 1-1.2), correlated channels."""
    g = np.random.default_rng(seed)
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = 1.0
    planes = []
    for _ in range(3):
        spec = (g.normal(size=f.shape) + 1j * g.normal(size=f.shape)) / f ** alpha
        spec[0, 0] = 0
        planes.append(np.fft.irfft2(spec, s=(height, width)).astype(np.float32))
    tex = np.stack(planes, -1) @ np.array([[1, .6, .4], [.6, 1, .6], [.4, .6, 1]], np.float32)
    return np.clip(128 + 45 * (tex - tex.mean()) / tex.std(), 0, 255)


def make_real_files(folder: Path, args) -> list[Path]:
    """``--real-files`` H.264 sources at ``--real-size``, streamed to ffmpeg frame by frame (no clip in memory)."""
    import subprocess

    import imageio_ffmpeg

    width, height = (int(v) for v in args.real_size.lower().split("x"))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(args.real_files):
        fps = args.real_fps[k % len(args.real_fps)]
        gop = max(1, round(fps * args.real_gop_seconds))
        num = int(round(args.real_seconds * fps))
        path = folder / f"real{k}_{width}x{height}_{fps}fps_g{gop}.mp4"
        if not path.exists():
            tex = natural_texture(height + 64, width + 4 * num, seed=100 + k)
            tmp = path.with_suffix(".part.mp4")
            cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
                   "-s", f"{width}x{height}", "-r", str(fps), "-i", "-", "-c:v", "libx264", "-preset", "medium",
                   "-crf", "23", "-g", str(gop), "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(tmp)]
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
            for i in range(num):
                dy = int(32 + 31 * np.sin(i / 20))
                frame = tex[dy:dy + height, 4 * i:4 * i + width] + 12 * np.sin(i / 15)
                proc.stdin.write(np.clip(frame, 0, 255).astype(np.uint8).tobytes())
            proc.stdin.close()
            if proc.wait() != 0:
                raise RuntimeError(f"ffmpeg failed writing {path}")
            tmp.rename(path)
        paths.append(path)
    return paths


def children_cpu() -> float | None:
    """CPU seconds (user + system) used so far by this process's live children (the loader workers);
    None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def time_loader(loader, clips: int, warmup: int = 1, cpu: dict | None = None) -> float:
    """Seconds for ``clips`` batches after ``warmup`` untimed ones (worker start-up, file opening). With
    ``cpu`` (a dict), ``cpu['workers']`` accumulates the CPU seconds the worker processes used meanwhile
    (what one clip costs a dedicated core, whatever else the machine runs; batches prefetched at the start
    and at the end of the window roughly cancel)."""
    it = loader.infinite()
    for _ in range(warmup):
        next(it)
    c0 = children_cpu() if cpu is not None else None
    t0 = time.perf_counter()
    for _ in range(clips):
        next(it)
    wall = time.perf_counter() - t0
    if c0 is not None:
        cpu["workers"] = cpu.get("workers", 0.0) + children_cpu() - c0
    return wall


def bench_readers(folder: Path, args) -> None:
    """Backends are measured in interleaved rounds (order rotated each round), so load from other
    processes on a shared machine spreads over all of them instead of biasing one."""
    results = {}
    for frames in args.frames:
        for workers in args.workers:
            spent = {b: 0.0 for b in args.backends}
            count = {b: 0 for b in args.backends}
            for r in range(args.rounds):
                order = args.backends[r % len(args.backends):] + args.backends[:r % len(args.backends)]
                for backend in order:
                    cfg = dict(path=str(folder), num_frames=frames, target_fps=7.0, height=320, width=576,
                               batch_size=1, num_workers=workers, reader=backend, train=True, drop_last=False,
                               reader_threads=args.reader_threads)
                    loader = build_video_loader(cfg, seed=r)
                    clips = max(2, args.clips // args.rounds // (3 if backend == "imageio" else 1))
                    spent[backend] += time_loader(loader, clips, warmup=workers)
                    count[backend] += clips
                    del loader
            for backend in args.backends:
                rate = count[backend] / spent[backend]
                results[(frames, workers, backend)] = rate
                emit(bench="data_clips_per_s", backend=backend, frames=frames, workers=workers, size="320x576",
                     source=f"{args.src_size} h264 24fps gop {args.gop}", clips=count[backend],
                     reader_threads=args.reader_threads, clips_per_s=round(rate, 3), ms_per_clip=round(1000 / rate, 1))
            row = {b: results[(frames, workers, b)] for b in args.backends}
            ratios = {f"{a}_over_{b}": round(row[a] / row[b], 3) for a in row for b in row if a != b and a == "decord"}
            if "pyav" in row and "imageio" in row:
                ratios["pyav_over_imageio"] = round(row["pyav"] / row["imageio"], 3)
            emit(bench="data_reader_ratio", frames=frames, workers=workers, **ratios)


def bench_real(work: Path, args) -> None:
    """Real-size loading: 1080p H.264 -> 320x576 clips of 14/25 frames at 7 fps; clips/s per worker for
    decord / PyAV, with and without decode-time downscaling, 1 / 2 workers; PSNR scaled vs full-size."""
    from tdd_video.data.dataset import build_video_dataset
    from tdd_video.data.sampler import SampleKey

    folder = work / f"real_{args.real_size}_{args.real_seconds:g}s_g{args.real_gop_seconds:g}s"
    t0 = time.perf_counter()
    files = make_real_files(folder, args)
    seconds = time.perf_counter() - t0
    mbit = sum(f.stat().st_size for f in files) * 8 / 1e6 / (args.real_seconds * len(files))
    source = f"{args.real_size} h264 {'/'.join(map(str, args.real_fps))}fps gop {args.real_gop_seconds:g}s"
    emit(bench="data_real_sources", files=len(files), size=args.real_size, fps=args.real_fps,
         seconds=args.real_seconds, gop_seconds=args.real_gop_seconds, mbit_per_s=round(mbit, 2),
         made_in_s=round(seconds, 1))
    base = dict(path=str(folder), target_fps=7.0, height=320, width=576, batch_size=1, train=True, flip=True,
                drop_last=False, reader_threads=args.reader_threads, reader_cache_size=args.real_reader_cache)
    for backend in args.real_backends:  # same samples, same crops: decode-time scaling vs full size + Pillow
        data = {dr: build_video_dataset(dict(base, num_frames=14, reader=backend, num_workers=0, decode_resize=dr))
                for dr in (False, True)}
        values = []
        for n in range(args.real_psnr_clips):
            key = SampleKey(n % len(files), n // len(files))
            a, b = (((data[dr][key]["pixel_values"] + 1) * 127.5).round() for dr in (False, True))
            values.append(float(10 * np.log10(255.0 ** 2 / float(((a - b) ** 2).mean()))))
        emit(bench="data_real_psnr_scaled_vs_full", backend=backend, frames=14, size="320x576", source=source,
             clips=len(values), psnr_db_mean=round(float(np.mean(values)), 2), psnr_db_min=round(min(values), 2))
    modes = [(b, dr) for b in args.real_backends for dr in args.real_decode_resize]
    rates = {}
    for frames in args.real_frames:
        for workers in args.real_workers:
            spent = {m: 0.0 for m in modes}
            count = {m: 0 for m in modes}
            cpu = {m: {} for m in modes}
            load = []
            for r in range(args.rounds):
                order = modes[r % len(modes):] + modes[:r % len(modes)]
                for backend, dr in order:
                    cfg = dict(base, num_frames=frames, num_workers=workers, reader=backend, decode_resize=dr)
                    loader = build_video_loader(cfg, seed=r)
                    clips = max(2, args.real_clips * workers // args.rounds)
                    spent[(backend, dr)] += time_loader(loader, clips, warmup=workers, cpu=cpu[(backend, dr)])
                    count[(backend, dr)] += clips
                    load.append(os.getloadavg()[0])
                    del loader
            for backend, dr in modes:
                rate = count[(backend, dr)] / spent[(backend, dr)]
                rates[(frames, workers, backend, dr)] = rate
                worker_cpu = cpu[(backend, dr)].get("workers")
                per_cpu = {} if not worker_cpu else dict(
                    worker_cpu_ms_per_clip=round(1000 * worker_cpu / count[(backend, dr)]),
                    clips_per_worker_cpu_s=round(count[(backend, dr)] / worker_cpu, 3))
                emit(bench="data_real_clips_per_s", backend=backend, decode_resize=dr, frames=frames, workers=workers,
                     size="320x576", fps=7, source=source, clips=count[(backend, dr)],
                     reader_threads=args.reader_threads, reader_cache_size=args.real_reader_cache,
                     clips_per_s=round(rate, 3), clips_per_s_per_worker=round(rate / workers, 3),
                     ms_per_clip_per_worker=round(1000 * workers / rate), **per_cpu,
                     loadavg_1min_during=[round(min(load), 2), round(max(load), 2)])
            if len(args.real_decode_resize) == 2:
                for backend in args.real_backends:
                    on, off = (rates[(frames, workers, backend, dr)] for dr in (True, False))
                    emit(bench="data_real_decode_resize_speedup", backend=backend, frames=frames, workers=workers,
                         ratio=round(on / off, 3))


class TimedLoader:
    """Wraps a VideoLoader; records the time each batch is handed to the trainer (= step boundaries)."""

    def __init__(self, loader):
        self.loader, self.times = loader, []

    def infinite(self):
        for batch in self.loader.infinite():
            self.times.append(time.perf_counter())
            yield batch

    def state_dict(self):
        return self.loader.state_dict()

    def load_state_dict(self, state):
        self.loader.load_state_dict(state)


def bench_train_ratio(folder: Path, work: Path, args) -> None:
    from tdd_video.data.cache import build_cache, video_encoder
    from tdd_video.data.config import VideoDataConfig
    from tdd_video.engine.config import load_config
    from tdd_video.engine.trainer import train
    from tdd_video.families import load_family
    from tdd_video.families.tiny import save_tiny_svd

    model_dir = work / "tiny_model"
    if not (model_dir / "model_index.json").exists():
        save_tiny_svd(model_dir, seed=0)
    data = dict(path=str(folder), num_frames=8, target_fps=7.0, stride=None, height=64, width=64, batch_size=1,
                num_workers=args.train_workers, drop_last=False)
    cache_dir = work / f"latent_cache_{folder.name}"
    t0 = time.perf_counter()
    build_cache(video_encoder(load_family("svd", str(model_dir))), VideoDataConfig.from_dict(data).validate(),
                cache_dir, dtype="fp16", shard_size=16, progress=False)
    emit(bench="latent_cache_build", clips=len(list(folder.glob("*.mp4"))), seconds=round(time.perf_counter() - t0, 2))
    rates = {}
    for mode in ("raw", "cache"):
        d = dict(data, use_cache=mode == "cache", cache_dir=str(cache_dir) if mode == "cache" else "")
        overrides = [f"run.output_dir={work / ('run_' + mode)}", f"model.path={model_dir}",
                     f"train.max_steps={args.train_steps}", "train.checkpoint_every=0", "validation.every=0",
                     "train.progress=false", "export.lora=false"] + [
                         f"data.{k}={json.dumps(v) if v is not None else 'null'}" for k, v in d.items()]
        cfg = load_config(Path(__file__).resolve().parents[1] / "configs/toy/tdd_svd_tiny.yaml", overrides)
        loader = TimedLoader(build_video_loader(cfg.data, seed=cfg.run.seed))
        shutil.rmtree(cfg.run.output_dir, ignore_errors=True)   # the bench's own scratch run (--workdir reuse)
        train(cfg, loader=loader, progress=False)
        gaps = np.diff(loader.times)[3:]  # skip start-up steps
        rates[mode] = 1.0 / float(np.mean(gaps))
        emit(bench="train_steps_per_s", data=mode, model="tiny SVD (8x64x64)", steps=len(gaps),
             source=f"{args.src_size} h264 24fps gop {args.gop}", workers=args.train_workers,
             steps_per_s=round(rates[mode], 3), ms_per_step=round(1000 * float(np.mean(gaps)), 1))
    emit(bench="train_cache_over_raw", ratio=round(rates["cache"] / rates["raw"], 3))


class MemoryLoader:
    """Cycles through batches held in memory: training without any data cost (for the consume rate)."""

    def __init__(self, batches):
        self.batches, self.pos = batches, 0

    def infinite(self):
        while True:
            yield self.batches[self.pos % len(self.batches)]
            self.pos += 1

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, state):
        self.pos = state["pos"]


def bench_consume_ratio(folder: Path, work: Path, args) -> None:
    """The standard "data loading ≥ 3× faster than training consumes", measured on the toy recipe
    (configs/toy/tdd_svd_zoo.yaml: the zoo teacher, 8 frames at 32×32, batch 2) reading the generated
    h264 sources: (a) clips/s the real loader delivers alone with `--consume-workers` workers, from
    the raw videos and from the latent cache (`python -m tdd_video.data.cache`); (b) clips/s a
    training run consumes when its batches come from memory (no data cost). Ratio a/b."""
    from tdd_video.data.cache import build_cache, video_encoder
    from tdd_video.engine.config import load_config
    from tdd_video.engine.trainer import train
    from tdd_video.families import load_family
    from tdd_video.zoo import resolve_model
    root = Path(__file__).resolve().parents[1]
    base = [f"data.path={folder}", "data.source=folder", "data.target_fps=7.0", "data.stride=null",
            "data.drop_last=false", f"train.max_steps={args.train_steps}", "train.checkpoint_every=0",
            "validation.every=0", "train.progress=false", "train.tensorboard=false", "export.lora=false"]
    recipe = root / "configs/toy/tdd_svd_zoo.yaml"
    cache_dir = work / "latent_cache_consume"
    if "cache" in args.consume_modes and not (cache_dir / "done").exists():
        cfg = load_config(recipe, base)
        t0 = time.perf_counter()
        family = load_family("svd", str(resolve_model(cfg.model.path)))
        build_cache(video_encoder(family), cfg.data, cache_dir, dtype="fp16", shard_size=16, progress=False)
        (cache_dir / "done").write_text("ok\n")
        emit(bench="latent_cache_build", clips=len(list(folder.glob("*.mp4"))),
             seconds=round(time.perf_counter() - t0, 2))
    consume = None
    runs = [(m, dr) for m in args.consume_modes for dr in (args.consume_decode_resize if m == "raw" else [None])]
    for mode, dr in runs:
        for workers in args.consume_workers:
            extra = [f"data.num_workers={workers}", f"run.output_dir={work / f'run_consume_{mode}_w{workers}'}"]
            if mode == "cache":
                extra += ["data.use_cache=true", f"data.cache_dir={cache_dir}"]
            else:
                extra += [f"data.decode_resize={'true' if dr else 'false'}"]
            cfg = load_config(recipe, base + extra)
            bs = cfg.data.batch_size
            loader = build_video_loader(cfg.data, seed=cfg.run.seed)
            batches = max(4, args.clips // bs)
            cpu = {}
            load_rate = batches * bs / time_loader(loader, batches, warmup=max(1, workers), cpu=cpu)
            if consume is None:      # the training side does not depend on where batches come from
                it = loader.infinite()
                timed = TimedLoader(MemoryLoader([next(it) for _ in range(4)]))
                del it
                shutil.rmtree(cfg.run.output_dir, ignore_errors=True)   # the bench's own scratch run (--workdir reuse)
                train(cfg, loader=timed, progress=False)
                gaps = np.diff(timed.times)[3:]                      # skip start-up steps
                consume = bs / float(np.mean(gaps))
                emit(bench="train_clips_per_s", recipe="configs/toy/tdd_svd_zoo.yaml", frames=cfg.data.num_frames,
                     size=f"{cfg.data.height}x{cfg.data.width}", batch=bs, steps=len(gaps),
                     clips_per_s=round(consume, 3))
            del loader
            emit(bench="data_consume_ratio", data=mode, decode_resize=dr, recipe="configs/toy/tdd_svd_zoo.yaml",
                 workers=workers, source=f"{args.src_size} h264 24fps gop {args.gop}",
                 loader_clips_per_s=round(load_rate, 3),
                 **({"worker_cpu_ms_per_clip": round(1000 * cpu["workers"] / (batches * bs), 1)} if cpu.get("workers")
                    else {}),
                 train_clips_per_s=round(consume, 3), ratio=round(load_rate / consume, 3), target=3.0)


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=6)
    p.add_argument("--src-size", default="640x360", help="WxH of the generated source videos")
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--gop", type=int, default=48, help="keyframe interval of the sources (x264 default: 250)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per configuration")
    p.add_argument("--frames", type=int, nargs="+", default=[14, 25])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--backends", nargs="+", default=["decord", "pyav", "imageio"])
    p.add_argument("--clips", type=int, default=24, help="timed clips per configuration (imageio: a third)")
    p.add_argument("--reader-threads", type=int, default=1, help="decoder threads per worker (0 = library auto)")
    p.add_argument("--train-ratio", action="store_true", help="also measure raw-video vs latent-cache steps/s")
    p.add_argument("--train-steps", type=int, default=23)
    p.add_argument("--train-workers", type=int, default=1)
    p.add_argument("--consume-ratio", action="store_true",
                   help="also measure loader clips/s over the clips/s the toy training recipe consumes")
    p.add_argument("--consume-workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--consume-modes", nargs="+", choices=("raw", "cache"), default=["raw", "cache"])
    p.add_argument("--consume-decode-resize", type=_bool, nargs="+", default=[True, False],
                   help="raw mode: data.decode_resize values to measure")
    p.add_argument("--real", action="store_true", help="real-size mode: 1080p H.264 sources, 320x576 clips")
    p.add_argument("--real-files", type=int, default=6)
    p.add_argument("--real-size", default="1920x1080", help="WxH of the real-size sources")
    p.add_argument("--real-fps", type=int, nargs="+", default=[24, 25, 30], help="cycled over the files")
    p.add_argument("--real-seconds", type=float, default=5.0)
    p.add_argument("--real-gop-seconds", type=float, default=1.5, help="keyframe interval (web video: 1-2 s)")
    p.add_argument("--real-frames", type=int, nargs="+", default=[14, 25])
    p.add_argument("--real-workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--real-backends", nargs="+", choices=("decord", "pyav"), default=["decord", "pyav"])
    p.add_argument("--real-decode-resize", type=_bool, nargs="+", default=[False, True])
    p.add_argument("--real-clips", type=int, default=6, help="timed clips per configuration and worker")
    p.add_argument("--real-psnr-clips", type=int, default=6)
    p.add_argument("--real-reader-cache", type=int, default=1,
                   help="data.reader_cache_size: 1 = a clip reopens its file unless the previous clip of its worker "
                        "came from the same one (a large dataset: almost every clip opens a file)")
    p.add_argument("--skip-readers", action="store_true")
    p.add_argument("--workdir", help="keep generated files here (default: a temp dir, deleted)")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.src_size.lower().split("x"))
    torch.set_num_threads(1)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        if not args.skip_readers or args.train_ratio or args.consume_ratio:
            folder = work / f"videos_{args.src_size}_g{args.gop}_{args.seconds:g}s"
            files = make_files(folder, args.files, height, width, args.seconds, args.gop)
            mbit = sum(f.stat().st_size for f in files) * 8 / 1e6 / (args.seconds * len(files))
            emit(bench="data_sources", files=len(files), size=args.src_size, seconds=args.seconds, gop=args.gop,
                 mbit_per_s=round(mbit, 2))
        if not args.skip_readers:
            bench_readers(folder, args)
        if args.train_ratio:
            bench_train_ratio(folder, work, args)
        if args.consume_ratio:
            bench_consume_ratio(folder, work, args)
        if args.real:
            bench_real(work, args)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
