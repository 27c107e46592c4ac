"""Side-by-side comparison of few-step samplers against the many-step teacher (issue 6).

Contenders are written `METHOD@STEPS[+refine]`:
* `teacher@25`   — the base model, Euler on diffusers' Karras σ grid (the SVD pipeline's sampler),
                   frame-wise CFG `teacher_guidance` (default 1 → 3, the pipeline default);
* `tdd@4`        — the TDD student (`tdd_lora` or full `tdd_unet`), TDD sampler (η, guidance g);
* `tdd@4+refine` — the same with Distillation++ teacher refinement (docs/math.md §7);
* `animatelcm@4` — AnimateLCM (`animatelcm_unet`: the released full-UNet file, loaded strictly; or
                   `animatelcm_lora`: our own distilled adapter), AnimateLCM sampler (docs/math.md §8);
* `default@1`    — what `infer/img2vid.py --steps 1` renders without --model: the student shipped next to the
                   model for that step count, at its strength (tdd_video.zoo.STEP_STUDENTS), TDD sampler.
Every contender starts from THE SAME initial noise ε and conditioning per (image, seed); stochastic
samplers re-noise from a generator seeded per (image, seed). UNet passes are counted by a forward
pre-hook on every UNet involved (batch rows / video batch). The reference for MSE / PSNR / SSIM
and the ×teacher ratios is the teacher contender with the most steps (`teacher@25` is added if
no teacher is listed).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tdd_video import zoo
from tdd_video.core.params import DEFAULT_ETA
from tdd_video.data.image_io import fit_image, image_to_tensor, load_image
from tdd_video.data.synthetic import SyntheticConfig, render_clip
from tdd_video.data.video_io import write_video
from tdd_video.errors import ConfigError
from tdd_video.eval import metrics as M
from tdd_video.eval import report
from tdd_video.eval.contenders import Contender, Contenders, parse_contender
from tdd_video.eval.fvd import I3DFeatures, fvd
from tdd_video.families import load_family

Tensor = torch.Tensor
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
DEFAULT_CONTENDERS = ("teacher@25", "teacher@4", "tdd@4", "animatelcm@4")
HELD_OUT_SEED = 90210        # synthetic first frames from a dataset seed no training recipe uses


@dataclass
class CompareConfig:
    """Everything infer/compare.py accepts (see its --help)."""

    contenders: list[str] | None = None       # None: DEFAULT_CONTENDERS, students without weights dropped
    model: str | None = None                  # diffusers folder / hub id; None = default (zoo teacher or tiny)
    model_dir: str | None = None              # set by run: the resolved model (default@N: <model_dir>/students/)
    tdd_lora: str | None = None
    tdd_unet: str | None = None
    animatelcm_unet: str | None = None
    animatelcm_lora: str | None = None
    images: list[str] = field(default_factory=list)
    num_default_images: int = 3
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    frames: int | None = None
    height: int | None = None
    width: int | None = None
    out: str = "runs/compare"
    i3d: str | None = None
    fps_id: int = 6
    motion_bucket_id: int = 127
    noise_aug: float = 0.02
    teacher_guidance: tuple[float, float] = (1.0, 3.0)
    tdd_guidance: float = 1.0
    tdd_eta: float = DEFAULT_ETA
    refine_strength: float = 0.05
    animatelcm_guidance: tuple[float, float] = (1.0, 1.0)
    video_format: str = "mp4"
    decode_chunk: int | None = None           # VAE-decode this many frames at a time (None: all)
    fps: int = 7
    progress: bool = True


def default_model() -> str:
    """The toy-zoo SVD teacher (tdd_video.zoo, 'toy-svd') when its weights are present, else 'tiny'."""
    if zoo.DEFAULT_SVD in zoo.available():
        return str(zoo.resolve_model(zoo.DEFAULT_SVD))
    return "tiny"


def resolve_model_name(model: str) -> str:
    """A zoo name ('toy-svd') -> its folder; 'tiny', local folders and hub ids pass through."""
    return str(zoo.resolve_model(model)) if zoo.is_zoo_name(model) else model


def zoo_students(model: str) -> dict[str, str]:
    """LoRA students shipped next to a zoo teacher (<teacher>/students/<name>/*.safetensors):
    {"tdd": file, "adv": file, "animatelcm": file} for folders whose names start with those words. Among several
    TDD students the zoo's default one (zoo.DEFAULT_STUDENT) fills the slot, else the first by name."""
    found: dict[str, str] = {}
    root = Path(model) / "students"
    if not root.is_dir():
        return found
    folders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: (p.name != zoo.DEFAULT_STUDENT, p.name))
    for folder in folders:
        files = sorted(folder.rglob("*.safetensors"))
        for kind in ("animatelcm", "adv", "tdd"):
            if folder.name.lower().startswith(kind) and files and kind not in found:
                found[kind] = str(files[0])
    return found


def load_images(cfg: CompareConfig, height: int, width: int) -> tuple[list[Tensor], list[str], list[str]]:
    """Conditioning images as [3, H, W] tensors in [-1, 1], their names, and notes. Files or folders;
    default: the bundled sample image plus first frames of held-out synthetic clips."""
    notes: list[str] = []
    pils, names = [], []
    if cfg.images:
        for item in cfg.images:
            p = Path(item)
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) if p.is_dir() else [p]
            if p.is_dir() and not files:
                raise ConfigError("images", f"folder {str(p)!r} has no images ({', '.join(IMAGE_SUFFIXES)})")
            for f in files:
                img, n = load_image(f)
                pils.append(img)
                names.append(f.name)
                notes += [f"{f.name}: {x}" for x in n]
    else:
        from PIL import Image

        img, n = load_image(None)
        pils.append(img)
        names.append("sample_image")
        notes += n
        syn = SyntheticConfig(num_frames=1, height=height, width=width)
        for i in range(max(0, cfg.num_default_images - 1)):
            frames, meta = render_clip(syn, HELD_OUT_SEED, i)
            pils.append(Image.fromarray(frames[0]))
            names.append(f"synthetic_{meta['kind']}_{i}")
    out = []
    for img in pils:
        fitted, n = fit_image(img, height, width)
        notes += n
        out.append(image_to_tensor(fitted)[0])
    return out, names, notes




@dataclass
class CompareResult:
    rows: list[dict]
    per_sample: list[dict]
    files: dict[str, str]
    reference: str
    notes: list[str]


def _resolve(cfg: CompareConfig) -> tuple[list[Contender], Contender, list[str]]:
    notes = []
    specs = list(DEFAULT_CONTENDERS) if cfg.contenders is None else list(cfg.contenders)
    if not specs:
        raise ConfigError("contender", "give at least one contender (e.g. teacher@25 tdd@4)")
    contenders = [parse_contender(s) for s in specs]
    if len({c.label for c in contenders}) != len(contenders):
        raise ConfigError("contender", f"duplicate contenders in {specs}")
    teachers = [c for c in contenders if c.method == "teacher"]
    if not teachers:
        contenders.insert(0, parse_contender("teacher@25"))
        teachers = contenders[:1]
        notes.append("no teacher contender given: added teacher@25 as the reference")
    return contenders, max(teachers, key=lambda c: c.steps), notes


def _metrics(video: Tensor, lat: Tensor, ref_video: Tensor, ref_lat: Tensor, image: Tensor) -> dict:
    return {"latent_mse": M.latent_mse(lat, ref_lat), "psnr_db": M.psnr(video, ref_video),
            "ssim": M.ssim(video, ref_video), "temporal_change": M.temporal_change(video),
            "temporal_ratio": M.ratio(M.temporal_change(video), M.temporal_change(ref_video)),
            "sharpness": M.sharpness(video), "sharpness_ratio": M.ratio(M.sharpness(video), M.sharpness(ref_video)),
            "first_frame_psnr": M.first_frame_psnr(video, image)}


def _loadavg() -> float | None:
    """1-minute load average (wall times are only comparable on an otherwise idle machine)."""
    import os
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def run_compare(cfg: CompareConfig, family=None) -> CompareResult:
    """Sample every contender on every (image, seed) from shared noise, measure, and write the grid
    video, frame strips and metrics tables into `cfg.out`. `family` may be injected (tests)."""
    from tqdm.auto import tqdm

    contenders, reference, notes = _resolve(cfg)
    if cfg.video_format not in ("mp4", "gif"):
        raise ConfigError("--format", f"got {cfg.video_format!r}, allowed values are 'mp4', 'gif'")
    if not cfg.seeds:
        raise ConfigError("--seeds", "give at least one seed")
    if family is None:
        model = resolve_model_name(cfg.model) if cfg.model else default_model()
        students = zoo_students(model)
        methods = {c.method for c in contenders}
        if "tdd" in methods and not (cfg.tdd_lora or cfg.tdd_unet) and "tdd" in students:
            cfg.tdd_lora = students["tdd"]
            notes.append(f"tdd student from the zoo: {students['tdd']}")
        if "animatelcm" in methods and not (cfg.animatelcm_lora or cfg.animatelcm_unet) and "animatelcm" in students:
            cfg.animatelcm_lora = students["animatelcm"]
            notes.append(f"animatelcm student from the zoo: {students['animatelcm']}")
        family = load_family("svd", model)
        cfg.model_dir = model
        notes.append(f"model: {model}")
    if cfg.contenders is None:                      # defaults: keep only contenders that have weights
        have = {"teacher": True, "tdd": bool(cfg.tdd_lora or cfg.tdd_unet),
                "animatelcm": bool(cfg.animatelcm_lora or cfg.animatelcm_unet)}
        dropped = [c.label for c in contenders if not have[c.method]]
        contenders = [c for c in contenders if have[c.method]]
        if dropped:
            notes.append(f"default contenders {', '.join(dropped)} skipped: no student weights "
                         "(--tdd-lora / --animatelcm-unet / --animatelcm-lora, or a zoo teacher with students)")
    extractor = None
    if cfg.i3d:
        extractor = I3DFeatures(cfg.i3d, device=family.device)
    factor = family.vae_scale_factor
    height = cfg.height or int(family.unet.config.sample_size) * factor
    width = cfg.width or int(family.unet.config.sample_size) * factor
    frames = cfg.frames or family.num_frames
    if height % factor or width % factor:
        raise ConfigError("--height/--width", f"{height}x{width} must be multiples of the VAE factor {factor}")
    images, names, img_notes = load_images(cfg, height, width)
    notes += img_notes
    bench = Contenders(family, cfg, contenders)
    order = [reference] + [c for c in contenders if c != reference]
    per_sample: list[dict] = []
    videos: dict[str, list[Tensor]] = {c.label: [] for c in contenders}
    pairs = [(i, s) for i in range(len(images)) for s in cfg.seeds]
    bar = tqdm(total=len(pairs) * len(order), desc="compare", disable=not cfg.progress)
    try:
        for i, seed in pairs:
            image = images[i].to(family.device)
            gen = torch.Generator().manual_seed(seed * 7919 + i)
            cond = family.encode_conditioning({"first_frame": image[None]}, gen, train=False, noise_aug=cfg.noise_aug,
                                              fps_id=cfg.fps_id, motion_bucket_id=cfg.motion_bucket_id)
            null = family.null_conditioning(cond)
            noise = torch.randn(family.latent_shape(1, frames, height, width),
                                generator=torch.Generator().manual_seed(seed)).to(family.device)
            ref_video = ref_lat = None
            for c in order:
                bench.counter.reset(videos=1)
                start = time.perf_counter()
                with bench.using(c):
                    lat = bench.sample(c, cond, null, noise, seed * 1000 + i + 1).float()
                wall = time.perf_counter() - start
                with torch.no_grad():
                    video = family.decode_latents(lat, cfg.decode_chunk)[0].clamp(-1, 1).float().cpu()
                if c == reference:
                    ref_video, ref_lat = video, lat
                row = {"contender": c.label, "image": names[i], "seed": seed, "unet_passes": bench.counter.passes,
                       "wall_s": wall, **_metrics(video, lat.cpu(), ref_video, ref_lat.cpu(), images[i].cpu())}
                per_sample.append(row)
                videos[c.label].append(video.half())
                bar.update()
    finally:
        bar.close()
        bench.counter.close()
    rows = []
    keys = [k for k, _, _ in report.COLUMNS if k != "fvd"]
    for c in contenders:
        mine = [r for r in per_sample if r["contender"] == c.label]
        rows.append({"contender": c.label, "method": c.method, "steps": c.steps, "refine": c.refine,
                     **{k: _mean([r[k] for r in mine]) for k in keys}, "fvd": None})
    fvd_note = None
    if extractor is not None:
        real = torch.stack(videos[reference.label]).float()
        for row in rows:
            try:
                row["fvd"] = fvd(real, torch.stack(videos[row["contender"]]).float(), extractor)
            except Exception as e:  # noqa: BLE001 - an I3D that rejects the clip size must not lose the table
                notes.append(f"FVD for {row['contender']} failed: {type(e).__name__}: {e}")
        fvd_note = (f"FVD: I3D features ({cfg.i3d}) of {len(real)} video(s) per contender vs the reference's; "
                    "with this few videos it is a consistency check, not a benchmark number.")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    grid = report.grid_video([[videos[c.label][k].float() for c in contenders] for k in range(len(pairs))])
    files["grid"] = str(write_video(grid, out / f"grid.{cfg.video_format}", fps=cfg.fps))
    for k, (i, seed) in enumerate(pairs):
        strip = report.frame_strip([videos[c.label][k].float() for c in contenders], [c.label for c in contenders])
        path = out / ("strip.png" if k == 0 else f"strips/strip_{names[i]}_seed{seed}.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        strip.save(path)
        files.setdefault("strip", str(path))
    meta = {"reference": reference.label, "contenders": [c.label for c in contenders], "images": names,
            "num_images": len(images), "seeds": list(cfg.seeds), "frames": frames, "height": height, "width": width,
            "grid_layout": "rows = (image, seed) in the order of per_sample; columns = contenders",
            "settings": {k: v for k, v in vars(cfg).items() if k not in ("progress",)},
            "fvd_note": fvd_note, "notes": notes, "torch_threads": torch.get_num_threads(),
            "loadavg_1min_at_end": _loadavg()}
    md, js = report.write_tables(out, rows, per_sample, meta)
    files.update(markdown=str(md), json=str(js))
    return CompareResult(rows, per_sample, files, reference.label, notes)
