"""tools/zoo/svd_student.py: the model card of a shipped toy-svd student holds its bench rows, mean ± SE."""
import json

import pytest

from tools.zoo.svd_student import bench_rows, main, table

ROWS = [{"contender": "teacher@25", "unet_passes": 50.0, "latent_mse": 0.0, "latent_mse_se": 0.0, "psnr_db": "inf",
         "psnr_db_se": 0.0, "sharpness_ratio": 1.0, "motion_ratio": 1.0, "fd": 0.004, "fd_se": 0.0058},
        {"contender": "tdd@4", "unet_passes": 4.0, "latent_mse": 0.05581, "latent_mse_se": 0.00321, "psnr_db": 25.72,
         "psnr_db_se": 0.32, "sharpness_ratio": 1.0875, "sharpness_ratio_se": 0.0363, "motion_ratio": 1.185,
         "motion_ratio_se": 0.028, "fd": 0.0273, "fd_se": 0.0161},
        {"contender": "animatelcm@4", "unet_passes": 4.0, "latent_mse": 0.2},
        {"bench": "quality_files", "json": "x"}]


def test_rows_and_table():
    rows = bench_rows(ROWS, "tdd")
    assert [r["contender"] for r in rows] == ["teacher@25", "tdd@4"]
    md = table(rows).splitlines()
    assert md[0].startswith("| contender | UNet passes | latent MSE")
    assert md[2].startswith("| teacher@25 | 50 | 0.0000 ± 0.0000 | ∞ |")
    assert "| tdd@4 | 4 | 0.0558 ± 0.0032 | 25.72 ± 0.32 | 1.09 ± 0.04 | 1.19 ± 0.03 | 0.027 ± 0.016 |" in md


def test_main_refuses_a_bench_without_the_method(tmp_path, capsys):
    q = tmp_path / "q.jsonl"
    q.write_text("\n".join(json.dumps(r) for r in ROWS))
    lora = tmp_path / "l.safetensors"
    lora.write_bytes(b"")
    rc = main(["--name", "adv-2step", "--lora", str(lora), "--quality", str(q), "--quality-command", "x",
               "--command", "y"])
    assert rc == 2 and "no adv@N rows" in capsys.readouterr().err
    rc = main(["--name", "tdd-x", "--lora", str(tmp_path / "missing"), "--quality", str(q),
               "--quality-command", "x", "--command", "y"])
    assert rc == 2
    capsys.readouterr()
    rc = main(["--name", "tdd-4step", "--lora", str(lora), "--quality", str(q), "--quality-command", "x",
               "--command", "y", "--strength", "0"])            # refused before anything in the zoo is written
    assert rc == 2 and "--strength" in capsys.readouterr().err


def test_shipped_students_are_found_and_carry_their_bench_rows():
    """toy-svd ships a TDD, an AnimateLCM and an adversarial TDD student; each card quotes its training command,
    the bench command and its own bench rows (the numbers in the card are the bench's JSON lines)."""
    from pathlib import Path

    from tdd_video.eval.compare import zoo_students
    from tdd_video.zoo import resolve_model
    root = Path(__file__).resolve().parents[1]
    found = zoo_students(str(resolve_model("toy-svd")))
    assert set(found) == {"tdd", "adv", "animatelcm"}
    lines = [json.loads(x) for x in (root / "docs/bench/quality_toy_svd.jsonl").read_text().splitlines()]
    for kind, file in found.items():
        card = (Path(file).parent / "README.md").read_text()
        assert "train/distill_svd.py --config configs/toy/" in card and "bench/quality.py" in card
        rows = [r for r in bench_rows(lines, kind) if r["contender"].startswith(kind)]
        assert rows and all(line in card for line in table(rows).splitlines()[2:]), kind


@pytest.mark.parametrize("name, bench, recipe, steps, contenders", [
    ("tdd-8step", "quality_toy_svd_tdd8step", "tdd_svd_student_8step_stage4", 8,
     {"teacher@8", "tdd@4", "tdd@8", "tdd@16"}),
    ("tdd-2step", "quality_toy_svd_tdd2step", "tdd_svd_student_2step_stage2", 1,
     {"teacher@8", "tdd@1", "tdd@2", "tdd@3"})])
def test_the_specialist_students_carry_their_own_bench_rows(name, bench, recipe, steps, contenders):
    """tdd-8step (stage 4, K ∈ 4..8) and tdd-2step (K ∈ 1..2) ship with rows from their own bench files next to the
    teacher, and the default TDD slot of bench/compare stays the 4-step student (zoo.DEFAULT_STUDENT)."""
    from pathlib import Path

    from tdd_video.eval.compare import zoo_students
    from tdd_video.zoo import resolve_model
    root = Path(__file__).resolve().parents[1]
    folder = Path(resolve_model("toy-svd")) / "students"
    assert Path(zoo_students(str(resolve_model("toy-svd")))["tdd"]).parent.name == "tdd-4step"
    lines = [json.loads(x) for x in (root / f"docs/bench/{bench}.jsonl").read_text().splitlines()]
    rows = bench_rows(lines, "tdd")
    assert {r["contender"] for r in rows} >= contenders
    card = (folder / name / "README.md").read_text()
    assert f"configs/toy/{recipe}.yaml" in card and f"--steps {steps}" in card
    assert all(line in card for line in table(rows).splitlines()[2:])


def test_default_render_applies_the_student_made_for_the_step_count(tmp_path, monkeypatch):
    """No --model: --steps 8 (or more) applies tdd-8step, 4 to 7 steps tdd-4step, 1 to 3 steps tdd-2step (at the
    strength zoo.STEP_STUDENTS gives for each step count); the note names the student and its strength, and the frames
    equal an explicit --lora --lora-scale render of that student (picked by name, not by accident). An explicit
    --lora-scale wins over the zoo's strength."""
    from pathlib import Path

    from tdd_video import zoo
    from tdd_video.apps.img2vid import Img2VidSettings, render_img2vid
    monkeypatch.setenv("TDD_VIDEO_CACHE", str(tmp_path / "cache"))
    assert [zoo.student_for_steps(n) for n in (1, 2, 3, 4, 7, 8, 16, None)] == ["tdd-2step"] * 3 + ["tdd-4step"] * 2 + [
        "tdd-8step"] * 2 + ["tdd-4step"]
    assert [zoo.strength_for_steps(n) for n in (4, 8, None)] == [1.0] * 3
    assert zoo.strength_for_steps(1) > zoo.strength_for_steps(2) > 1 > zoo.strength_for_steps(3)
    students = Path(zoo.resolve_model("toy-svd")) / "students"
    previous = None
    for steps, name, scale in [(8, "tdd-8step", None), (4, "tdd-4step", None), (3, "tdd-2step", None),
                               (2, "tdd-2step", None), (1, "tdd-2step", None), (1, "tdd-2step", 1.0)]:
        kw = dict(steps=steps, frames=2, eta=0.0, progress=False)
        auto = render_img2vid(Img2VidSettings(model=None, lora_scale=scale, out=str(tmp_path / f"a{steps}.gif"), **kw))
        strength = zoo.strength_for_steps(steps) if scale is None else scale
        label = name if strength == 1 else f"{name} at LoRA strength {strength:g}"
        assert any(f"({label})" in n for n in auto.notes), auto.notes
        lora = str(students / name / "pytorch_lora_weights.safetensors")
        named = render_img2vid(Img2VidSettings(model="toy-svd", lora=lora, lora_scale=strength,
                                               out=str(tmp_path / f"b{steps}.gif"), **kw))
        assert (auto.frames == named.frames).all()
        if scale is not None:                 # vs the row before: same student and steps, the zoo strength
            assert not (auto.frames == previous).all()
        previous = auto.frames


def test_sdxl_student_builder_explains_itself_and_rejects_a_bad_override(capsys):
    """`python -m tools.zoo.sdxl_student --help` prints usage (it used to treat --help as an override and end in a
    stack trace); a bad override is one error line naming the key, before any training starts."""
    import pytest

    from tools.zoo.sdxl_student import main as sdxl_student
    with pytest.raises(SystemExit) as e:
        sdxl_student(["--help"])
    assert e.value.code == 0 and "overrides" in capsys.readouterr().out
    assert sdxl_student(["train.lr=abc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: config key 'train.lr'")
