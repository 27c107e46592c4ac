"""Driver for the 2-process DeepSpeed smoke test: the real engine (DeepSpeed backend, ZeRO from a
configs/deepspeed JSON) on the stand-in family, so it stays fast. Prints one JSON line per rank."""
import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from standin_family import ToyFamily  # noqa: E402

from tdd_video.engine.config import config_from_dict  # noqa: E402
from tdd_video.engine.trainer import train  # noqa: E402


class RankLoader:
    def __init__(self, rank, b=2):
        self.pos, self.rank, self.b = 0, rank, b

    def infinite(self):
        while True:
            g = torch.Generator().manual_seed(1000 * self.rank + self.pos)
            self.pos += 1
            yield {"latents": torch.randn(self.b, 3, 4, 8, 8, generator=g), "emb": torch.randn(self.b, 8, generator=g)}

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, s):
        self.pos = s["pos"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--local_rank", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--ds", default=None)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--kind", default="full")
    p.add_argument("--hidden", type=int, default=16, help="width of the stand-in network")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--backend", default="deepspeed")
    a = p.parse_args()
    torch.set_num_threads(1)
    cfg = config_from_dict({"run": {"output_dir": a.out, "seed": 0}, "trainable": {"kind": a.kind},
                            "method": {"guidance_min_range": [1.0, 1.5], "guidance_max_range": [2.0, 3.0]},
                            "train": {"backend": a.backend, "deepspeed_config": a.ds, "max_steps": a.steps,
                                      "lr": a.lr, "warmup_steps": 1, "checkpoint_every": 0, "tensorboard": False,
                                      "progress": False, "mixed_precision": "bf16", "grad_accum": 2},
                            "data": {"path": "synthetic", "batch_size": 2}})
    rank = int(os.environ.get("RANK", 0))
    out = train(cfg, family=ToyFamily("edm", hidden=a.hidden), loader=RankLoader(rank))
    opt_bytes = 0
    ckpt = Path(out["checkpoint"]) / "deepspeed"
    for f in ckpt.glob(f"*rank_{rank}_*optim_states.pt") if ckpt.is_dir() else []:
        opt_bytes += f.stat().st_size
    line = json.dumps({"rank": out["rank"], "world_size": out["world_size"], "backend": out["backend"],
                       "losses": out["losses"], "optimizer_file_bytes": opt_bytes,
                       "optimizer_state_bytes": out["optimizer_state_bytes"]})
    (Path(a.out) / f"result_rank{rank}.json").write_text(line)   # ranks share stdout; files do not interleave
    print(line, flush=True)


if __name__ == "__main__":
    main()
