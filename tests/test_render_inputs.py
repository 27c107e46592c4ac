"""The render CLIs (infer/img2vid.py, infer/txt2img.py, infer/compare.py) on bad input and their output:
one ``error: --flag: ...`` line and exit status 2 for every user mistake (corrupt files, unwritable
outputs, unknown models, bad values) — before torch is imported where the check allows it, never a
traceback; "wrote X" only when X was written; an animated GIF input is noted; the libraries' loading
notices and progress bars stay off stderr."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tdd_video.cli import compare as compare_cli
from tdd_video.cli import img2vid as img2vid_cli
from tdd_video.cli import txt2img as txt2img_cli
from tdd_video.cli.flags import flag_error, flag_name
from tdd_video.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CLIS = {"img2vid": "tdd_video.cli.img2vid", "txt2img": "tdd_video.cli.txt2img", "compare": "tdd_video.cli.compare"}
FAST = {"img2vid": ["--model", "tiny", "--steps", "1", "--frames", "2"], "txt2img": ["--model", "tiny", "--steps", "1"],
        "compare": ["--model", "tiny", "teacher@2", "--seeds", "0", "--num-images", "1", "--frames", "2"]}


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TDD_VIDEO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def env(tmp_path) -> dict:
    return {"TDD_VIDEO_CACHE": os.environ["TDD_VIDEO_CACHE"], "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
            "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}


def run(cli: str, args: list[str], tmp_path, no_torch: bool = False) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter; `no_torch`: also assert it ended without importing torch / diffusers."""
    check = ("assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, "
             "'torch was imported'; " if no_torch else "")
    code = f"import sys; from {CLIS[cli]} import main; rc = main({args!r}); {check}sys.exit(rc)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(tmp_path),
                          cwd=tmp_path, timeout=300)


def one_error_line(res: subprocess.CompletedProcess, flag: str) -> str:
    """The run failed with exit status 2 and exactly one stderr line ``error: <flag>: ...``; returns it."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag}: "), res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    return lines[0]


@pytest.fixture
def junk(tmp_path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    files = {"lora": tmp_path / "lora.safetensors", "unet": tmp_path / "unet.safetensors",
             "image": tmp_path / "photo.png"}
    for path in files.values():
        path.write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    return files


# ----------------------------------------------------------------------------------------- 1. corrupt files
@pytest.mark.parametrize("cli,flag,kind", [("img2vid", "--lora", "lora"), ("img2vid", "--unet", "unet"),
                                           ("img2vid", "--image", "image"), ("txt2img", "--lora", "lora"),
                                           ("compare", "--tdd-lora", "lora"), ("compare", "--animatelcm-unet", "unet"),
                                           ("compare", "--images", "image")])
def test_corrupt_file_is_one_error_line(tmp_path, junk, cli, flag, kind):
    res = run(cli, FAST[cli] + [flag, str(junk[kind]), "--out", str(tmp_path / "out"), "--no-progress"
                                if cli != "compare" else "--quiet"], tmp_path, no_torch=True)
    line = one_error_line(res, flag)
    assert junk[kind].name in line


# ---------------------------------------------------------------------------------------------- 2. outputs
@pytest.mark.parametrize("cli,out", [("img2vid", "/proc/x.mp4"), ("img2vid", "/proc/frames"),
                                     ("img2vid", "{tmp}/a_file/x.gif"), ("img2vid", "{tmp}/a_folder.gif"),
                                     ("img2vid", "{tmp}/a_file"), ("txt2img", "/proc/x.png"),
                                     ("txt2img", "{tmp}/a_file/grid.png"), ("compare", "/proc/cmp")])
def test_unwritable_out_is_refused_before_the_model_loads(tmp_path, cli, out):
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "a_folder.gif").mkdir()
    quiet = "--quiet" if cli == "compare" else "--no-progress"
    res = run(cli, FAST[cli] + ["--out", out.format(tmp=tmp_path), quiet], tmp_path, no_torch=True)
    one_error_line(res, "--out")
    assert "wrote" not in res.stdout and "[load]" not in res.stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders (the /proc cases cover it)")
def test_read_only_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        for cli, out in (("img2vid", ro / "v.gif"), ("img2vid", ro / "sub" / "frames"), ("txt2img", ro / "x.png")):
            one_error_line(run(cli, FAST[cli] + ["--out", str(out), "--no-progress"], tmp_path, no_torch=True),
                           "--out")
    finally:
        ro.chmod(0o755)


def _frame_count(path: Path) -> int:
    from tdd_video.data.video_io import read_video_frames
    return len(read_video_frames(path))


def test_gif_folder_and_png_outputs(tmp_path, capsys):
    """img2vid: .gif and a folder of PNG frames (also into an existing folder); txt2img: .png and a folder."""
    for out in (tmp_path / "v.gif", tmp_path / "frames", tmp_path / "frames", tmp_path / "new" / "deep" / "frames"):
        assert img2vid_cli.main(FAST["img2vid"] + ["--out", str(out), "--no-progress"]) == 0
        assert _frame_count(out) == 2
        assert f"wrote {out} " in capsys.readouterr().out
    for out, n in ((tmp_path / "g.png", 1), (tmp_path / "pngs", 2)):
        assert txt2img_cli.main(FAST["txt2img"] + ["--batch", str(n), "--out", str(out), "--no-progress"]) == 0
        assert out.is_file() if n == 1 else len(list(out.glob("img_*.png"))) == 2
        assert f"wrote {out} " in capsys.readouterr().out


def test_writer_failure_is_an_error_and_nothing_claims_wrote(tmp_path, capsys, monkeypatch):
    import tdd_video.apps.img2vid as img2vid_app
    import tdd_video.apps.txt2img as txt2img_app
    monkeypatch.setattr(img2vid_app, "write_video", lambda *a, **k: None)          # a writer that writes nothing
    assert img2vid_cli.main(FAST["img2vid"] + ["--out", str(tmp_path / "v.mp4"), "--no-progress"]) == 2
    cap = capsys.readouterr()
    assert "wrote" not in cap.out and cap.err.startswith("error: --out: ") and len(cap.err.splitlines()) == 1

    def broken(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(img2vid_app, "write_video", broken)
    assert img2vid_cli.main(FAST["img2vid"] + ["--out", str(tmp_path / "v.gif"), "--no-progress"]) == 2
    cap = capsys.readouterr()
    assert "wrote" not in cap.out and "No space left" in cap.err and cap.err.startswith("error: --out: ")
    monkeypatch.setattr(txt2img_app, "write_images", lambda images, out, cols: [out])
    assert txt2img_cli.main(FAST["txt2img"] + ["--out", str(tmp_path / "t.png"), "--no-progress"]) == 2
    cap = capsys.readouterr()
    assert "wrote" not in cap.out and cap.err.startswith("error: --out: ")


def test_failed_ffmpeg_raises(tmp_path, monkeypatch):
    """imageio's ffmpeg writer only logs a failed encoder; write_video turns 'nothing written' into an OSError."""
    import torch

    from tdd_video.data import video_io
    monkeypatch.setattr(video_io, "_write_ffmpeg", lambda *a, **k: None)
    with pytest.raises(OSError, match="wrote nothing"):
        video_io.write_video(torch.zeros(2, 3, 8, 8), tmp_path / "x.mp4")


# ----------------------------------------------------------------------------------------------- 3. --model
@pytest.mark.parametrize("cli", ["img2vid", "txt2img", "compare"])
def test_model_names(tmp_path, cli):
    from tdd_video import zoo
    line = one_error_line(run(cli, ["--model", "/nonexistent/folder"], tmp_path, no_torch=True), "--model")
    assert "folder '/nonexistent/folder' does not exist" in line and "repo" not in line.lower()
    line = one_error_line(run(cli, ["--model", "no-such-model"], tmp_path, no_torch=True), "--model")
    assert "'no-such-model' not found" in line and all(name in line for name in zoo.available())
    # a plausible hub id goes to diffusers: offline here, so one clear line (no hub warnings, no traceback)
    quiet = "--quiet" if cli == "compare" else "--no-progress"
    line = one_error_line(run(cli, ["--model", "someone/no-such-model", quiet], tmp_path), "--model")
    assert "someone/no-such-model" in line and "hub" in line and "stacktrace" not in line


# -------------------------------------------------------------------------------------- 4. multi-frame input
def test_animated_gif_input_uses_frame_0_with_a_note(tmp_path, capsys):
    from tdd_video.apps.img2vid import Img2VidSettings, render_img2vid
    from tdd_video.data.image_io import load_image
    gif = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (40, 40), c) for c in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    img, notes = load_image(gif)
    r, g, b = np.asarray(img)[20, 20].tolist()
    assert r > 200 and g < 50 and b < 50                                    # frame 0 (red)
    assert any("3 frames" in n and "first frame" in n for n in notes)
    r = render_img2vid(Img2VidSettings(image=str(gif), model="tiny", steps=1, frames=2, progress=False,
                                       out=str(tmp_path / "o.gif")))
    assert any("first frame" in n for n in r.notes)
    assert img2vid_cli.main(FAST["img2vid"] + ["--image", str(gif), "--out", str(tmp_path / "c.gif"),
                                               "--no-progress"]) == 0
    assert any(line.startswith("note: anim.gif has 3 frames") for line in capsys.readouterr().out.splitlines())


# ------------------------------------------------------------------------------------------- 5. flag names
def test_config_keys_map_to_flags():
    parser = compare_cli.build_parser()
    assert flag_name("guidance_min") == "--guidance-min" and flag_name("clip") == "--clip-x0"
    assert flag_name("prompts", txt2img_cli.build_parser()) == "--prompt"
    assert flag_name("lora.preset", img2vid_cli.build_parser()) == "--lora"
    assert flag_name("num_default_images", parser) == "--num-images"
    assert flag_name("animatelcm_unet", parser) == "--animatelcm-unet"
    assert flag_name("--format", parser) == "--format"
    e = ConfigError("image", "file not found: x.png")
    assert e.key == "image" and str(e) == "config key 'image': file not found: x.png"      # unchanged
    assert flag_error(e, img2vid_cli.build_parser()) == "--image: file not found: x.png"


BAD_VALUES = [
    ("img2vid", ["--image", "x.png"], "--image"), ("img2vid", ["--steps", "0"], "--steps"),
    ("img2vid", ["--eta", "1"], "--eta"), ("img2vid", ["--guidance-min", "1"], "--guidance-min"),
    ("img2vid", ["--guidance-min", "-1", "--guidance-max", "2"], "--guidance-min"),
    ("img2vid", ["--fps", "0"], "--fps"), ("img2vid", ["--motion-bucket", "5000"], "--motion-bucket"),
    ("img2vid", ["--noise-aug", "nan"], "--noise-aug"), ("img2vid", ["--lora-scale", "-1"], "--lora-scale"),
    ("img2vid", ["--out", "x.avi"], "--out"), ("img2vid", ["--frames", "0"], "--frames"),
    ("img2vid", ["--height", "0"], "--height"), ("img2vid", ["--decode-chunk", "0"], "--decode-chunk"),
    ("img2vid", ["--teacher-refine", "0.05"], "--teacher-refine"), ("img2vid", ["--fuse"], "--fuse"),
    ("img2vid", ["--seed", "-1"], "--seed"), ("img2vid", ["--lora", "missing.safetensors"], "--lora"),
    ("img2vid", ["--unet", "missing.safetensors"], "--unet"), ("img2vid", ["--model", "tiny:3"], "--model"),
    ("img2vid", ["--sampler", "animatelcm", "--clip-x0", "static:2"], "--clip-x0"),
    ("img2vid", ["--sampler", "animatelcm", "--eta", "0.2"], "--eta"),
    ("img2vid", ["--export-pipeline", "/proc/pipe"], "--export-pipeline"),
    ("txt2img", ["--prompt", " "], "--prompt"), ("txt2img", ["--batch", "0"], "--batch"),
    ("txt2img", ["--steps", "300"], "--steps"), ("txt2img", ["--out", "x.jpg"], "--out"),
    ("txt2img", ["--height", "4"], "--height"), ("txt2img", ["--lora", "missing.safetensors"], "--lora"),
    ("txt2img", ["--teacher-refine", "2"], "--teacher-refine"), ("txt2img", ["--guidance", "inf"], "--guidance"),
    ("compare", ["--tdd-eta", "1"], "--tdd-eta"), ("compare", ["--seeds", "-1"], "--seeds"),
    ("compare", ["--frames", "0"], "--frames"), ("compare", ["--i3d", "nope.pt"], "--i3d"),
    ("compare", ["--images", "nope.png"], "--images"), ("compare", ["--num-images", "0"], "--num-images"),
    ("img2vid", ["--steps", "abc"], "--steps"), ("img2vid", ["--clip-x0", "static"], "--clip-x0"),
    ("txt2img", ["--dtype", "fp64"], "--dtype"), ("compare", ["--teacher-guidance", "x"], "--teacher-guidance"),
]


@pytest.mark.parametrize("cli,args,flag", BAD_VALUES, ids=[f"{c}{' '.join(a)}" for c, a, _ in BAD_VALUES])
def test_bad_value_is_one_line_naming_the_flag_before_torch(tmp_path, cli, args, flag):
    start = time.perf_counter()
    res = run(cli, FAST[cli] + args, tmp_path, no_torch=True)
    seconds = time.perf_counter() - start
    line = one_error_line(res, flag)
    assert "config key" not in line
    assert seconds < 10, seconds          # ~0.3 s on an idle machine; loose for a loaded CI box
    if args[:1] == ["--image"]:
        assert line == "error: --image: file not found: x.png"


# ------------------------------------------------------------------------------------------ 6. quiet output
LIBRARY_NOISE = ("requires torchvision", "Loading pipeline components", "Loading weights", "Writing model shards",
                 "Couldn't connect")


@pytest.mark.parametrize("cli", ["img2vid", "txt2img", "compare"])
def test_library_notices_and_bars_stay_quiet(tmp_path, cli):
    extra = ["--export-pipeline", str(tmp_path / "pipe")] if cli == "img2vid" else []
    res = run(cli, FAST[cli] + extra + ["--out", str(tmp_path / ("o.png" if cli == "txt2img" else "o"))], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not any(noise in res.stderr for noise in LIBRARY_NOISE), res.stderr[-3000:]
    quiet = "--quiet" if cli == "compare" else "--no-progress"
    res = run(cli, FAST[cli] + extra + ["--out", str(tmp_path / ("p.png" if cli == "txt2img" else "p")), quiet],
              tmp_path)
    assert res.returncode == 0 and res.stderr == "", res.stderr[-3000:]       # no bar at all


def test_quiet_loading_restores_the_libraries_settings():
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    from tdd_video.families import quiet_loading
    def state():
        return (dlog.get_verbosity(), dlog.is_progress_bar_enabled(), tlog.get_verbosity(),
                tlog.is_progress_bar_enabled())

    before = state()
    with quiet_loading():
        assert not dlog.is_progress_bar_enabled() and not tlog.is_progress_bar_enabled()
        assert dlog.get_verbosity() == dlog.ERROR and tlog.get_verbosity() == tlog.ERROR
    assert state() == before


# ------------------------------------------------------------------------------------------------ 8. --i3d
def test_compare_help_says_i3d_runs_code(capsys):
    with pytest.raises(SystemExit):
        compare_cli.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "runs the code inside it" in text and "trusted source" in text
