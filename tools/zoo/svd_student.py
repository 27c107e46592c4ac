"""Ship a distilled toy-svd student into the zoo with a model card holding its bench rows.

    python -m tools.zoo.svd_student --name tdd-4step --lora runs/tdd_svd_student_4step_stage3/export/lora \\
        --quality docs/bench/quality_toy_svd.jsonl --quality-command "python bench/quality.py ..." \\
        --command "python train/distill_svd.py --config configs/toy/tdd_svd_student_4step_stage3.yaml ..."

1. copies the LoRA (``pytorch_lora_weights.safetensors``; a file or an export folder) to
   ``tdd_video/zoo/<teacher>/students/<name>/`` — a name starting with ``tdd``, ``adv`` or ``animatelcm``
   is what ``infer/compare.py`` and ``bench/quality.py`` pick up for that method;
2. writes ``README.md`` there: what the LoRA is (from its metadata), the exact training command, and the
   rows of ``bench/quality.py`` (its JSON lines) for the teacher and for this student's method, mean ± SE.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METRICS = (("latent_mse", "latent MSE ↓", 4), ("psnr_db", "PSNR dB ↑", 2), ("sharpness_ratio", "sharpness ×teacher", 2),
           ("motion_ratio", "motion ×teacher", 2), ("fd", "FD ↓", 3))


def bench_rows(lines: list[dict], method: str) -> list[dict]:
    """The bench's contender rows for the teacher, the untrained base and ``method`` (in the bench's order)."""
    keep = ("teacher@", "base@", f"{method}@")
    return [r for r in lines if "contender" in r and r["contender"].startswith(keep)]


def table(rows: list[dict]) -> str:
    """Markdown table of bench rows: mean ± standard error of every figure."""
    head = "| contender | UNet passes | " + " | ".join(m[1] for m in METRICS) + " |"
    out = [head, "|" + "---|" * (len(METRICS) + 2)]
    for r in rows:
        cells = [r["contender"], f"{r['unet_passes']:g}"]
        for key, _, digits in METRICS:
            v, se = r.get(key), r.get(f"{key}_se", 0.0)
            cells.append("∞" if v in ("inf", float("inf")) else f"{v:.{digits}f} ± {se:.{digits}f}")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def strength_note(meta: dict) -> str:
    """Card sentence for a LoRA whose strength was folded into its weights after training (or '')."""
    st = float(meta.get("strength", 1.0))
    if st == 1:
        return ""
    return (f" Its strength is folded in: the trained lora_B matrices × {st:g} (`--strength {st:g}` below), so the"
            f" file at scale 1 is the trained adapter at scale {st:g} (docs/quality.md §2).")


def card(name: str, meta: dict, command: str, rows: list[dict], quality_cmd: str, notes: str) -> str:
    method = meta.get("method", "?")
    return f"""# toy-svd / students / {name} — {method} LoRA student of the toy-svd teacher

LoRA rank {meta.get('rank')}, alpha {meta.get('alpha')} ({meta.get('step')} optimizer steps), distilled from
`tdd_video/zoo/toy-svd` with the project's own trainer.{strength_note(meta)} Built with:

```
python -m tools.zoo.build_svd --config configs/toy/pretrain_svd.yaml     # teacher + its clips (once)
{command}
```

## Quality (bench/quality.py, held-out photos and seeds, mean ± standard error)
`{quality_cmd}` — same initial noise for every contender; reference teacher@25 (Euler, frame-wise CFG 1 → 3);
FD = Fréchet distance of fixed random video features to teacher@25 on independent noise (docs/math.md §12).

{table(rows)}

{notes}
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="student folder name (tdd-*, adv-*, animatelcm-*)")
    p.add_argument("--lora", required=True, help="LoRA .safetensors or export folder")
    p.add_argument("--quality", required=True, help="JSON lines written by bench/quality.py")
    p.add_argument("--quality-command", required=True, help="the bench command, quoted in the card")
    p.add_argument("--command", required=True, help="the training command, quoted in the card")
    p.add_argument("--method", default=None, help="bench contender prefix (default: from the folder name)")
    p.add_argument("--notes", default="", help="extra Markdown appended to the card")
    p.add_argument("--teacher", default="toy-svd")
    p.add_argument("--strength", type=float, default=1.0,
                   help="fold this LoRA strength into the shipped weights (lora_B × S; default 1 = as trained)")
    args = p.parse_args(argv)
    from tdd_video.errors import ConfigError
    from tdd_video.lora import lora_file, read_lora, rescale_lora_file
    src = lora_file(args.lora)
    if not src.is_file():
        print(f"error: --lora: {src} not found", file=sys.stderr)
        return 2
    lines = [json.loads(x) for x in Path(args.quality).read_text().splitlines() if x.strip()]
    method = args.method or args.name.split("-")[0]
    rows = bench_rows(lines, method)
    if not any(r["contender"].startswith(f"{method}@") for r in rows):
        print(f"error: --quality: no {method}@N rows in {args.quality}", file=sys.stderr)
        return 2
    dest = ROOT / "tdd_video" / "zoo" / args.teacher / "students" / args.name
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / "pytorch_lora_weights.safetensors"
    if target.exists() and target.samefile(src):
        if args.strength != 1:
            print("error: --strength needs a --lora outside the zoo folder (the trained weights)", file=sys.stderr)
            return 2
    elif args.strength != 1:
        try:
            rescale_lora_file(src, target, args.strength)
        except ConfigError as e:
            print(f"error: --strength: {e}", file=sys.stderr)
            return 2
    else:
        shutil.copy2(src, target)
    (dest / "README.md").write_text(card(args.name, read_lora(target)[2] or {}, args.command, rows,
                                         args.quality_command, args.notes))
    print(f"shipped {args.name} to {dest.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
