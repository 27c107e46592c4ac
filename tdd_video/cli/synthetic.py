"""tdd-synthetic-clips: render the synthetic image-to-video clips of tdd_video.data.synthetic."""
from __future__ import annotations

import argparse

from tdd_video.data.synthetic import SyntheticConfig, write_dataset


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="tdd-synthetic-clips",
        description="Render synthetic image-to-video clips (moving shapes, camera pans over CC0/public-domain "
                    "photos from scikit-image) as mp4 files plus a manifest.jsonl (path, fps, motion_bucket_id, "
                    "caption). Deterministic by --seed; re-running skips clips already written.")
    p.add_argument("--out", required=True, help="output folder (clips/ and manifest.jsonl are written into it)")
    p.add_argument("--num", type=int, default=256, help="number of clips (default 256)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--frames", type=int, default=8, help="frames per clip (default 8)")
    p.add_argument("--size", type=int, nargs=2, default=(32, 32), metavar=("H", "W"), help="frame size (default 32 32)")
    p.add_argument("--no-photos", action="store_true", help="shapes over gradients only")
    args = p.parse_args(argv)
    cfg = SyntheticConfig(num_frames=args.frames, height=args.size[0], width=args.size[1],
                          kind_weights=(1.0, 0.0, 0.0) if args.no_photos else SyntheticConfig.kind_weights)
    manifest = write_dataset(args.out, args.num, args.seed, cfg)
    print(f"wrote {args.num} clips; manifest: {manifest}")

