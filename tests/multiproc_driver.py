"""Driver for the multi-process tests (DeepSpeed ZeRO, accelerate/torchrun, multi-node rendezvous): the real
engine and backends on the stand-in family, so it stays fast. Writes result_rank{r}.json per rank (and
pid_rank{r} while it runs); a preempted rank writes its result and exits with the preemption code."""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from standin_family import ToyFamily  # this script's folder (tests/) is on sys.path when run as a script

from tdd_video.engine.config import config_from_dict
from tdd_video.engine.preempt import PREEMPTED_EXIT_CODE, Preempted
from tdd_video.engine.trainer import train


class RankLoader:
    def __init__(self, rank, b=2, sleep=0.0):
        self.pos, self.rank, self.b, self.sleep = 0, rank, b, sleep

    def infinite(self):
        while True:
            time.sleep(self.sleep)
            g = torch.Generator().manual_seed(1000 * self.rank + self.pos)
            self.pos += 1
            yield {"latents": torch.randn(self.b, 3, 4, 8, 8, generator=g), "emb": torch.randn(self.b, 8, generator=g)}

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, s):
        self.pos = s["pos"]


class PixelLoader(RankLoader):
    """Tiny-SVD pixel batches (4 frames, 64 px) per rank."""

    def infinite(self):
        while True:
            g = torch.Generator().manual_seed(1000 * self.rank + self.pos)
            self.pos += 1
            yield {"pixel_values": torch.rand(self.b, 4, 3, 64, 64, generator=g) * 2 - 1,
                   "fps_id": torch.tensor([6] * self.b), "motion_bucket_id": torch.tensor([127] * self.b)}


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
    p.add_argument("--sleep", type=float, default=0.0, help="seconds per batch (slow runs for signal tests)")
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--resume", default=None)
    p.add_argument("--adv", type=float, default=0.0, help="adversarial TDD weight (needs --family tiny-svd)")
    p.add_argument("--family", default="standin", choices=["standin", "tiny-svd"])
    a = p.parse_args()
    torch.set_num_threads(1)
    cfg = config_from_dict({"run": {"output_dir": a.out, "seed": 0}, "trainable": {"kind": a.kind},
                            "method": {"guidance_min_range": [1.0, 1.5], "guidance_max_range": [2.0, 3.0],
                                       "adv": {"weight": a.adv}},
                            "train": {"backend": a.backend, "deepspeed_config": a.ds, "max_steps": a.steps,
                                      "lr": a.lr, "warmup_steps": 1, "checkpoint_every": a.checkpoint_every,
                                      "tensorboard": False, "progress": False, "mixed_precision": a.precision,
                                      "grad_accum": a.grad_accum},
                            "data": {"path": "synthetic", "batch_size": 2}})
    cfg.run.resume = a.resume
    rank = int(os.environ.get("RANK", 0))
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / f"pid_rank{rank}").write_text(str(os.getpid()))
    if a.family == "tiny-svd":
        from tdd_video.families import load_family
        family, loader = load_family("svd", "tiny"), PixelLoader(rank)
    else:
        family, loader = ToyFamily("edm", hidden=a.hidden), RankLoader(rank, sleep=a.sleep)
    try:
        out = train(cfg, family=family, loader=loader)
    except Preempted as e:
        (Path(a.out) / f"result_rank{rank}.json").write_text(json.dumps({"rank": rank, "preempted": e.step,
                                                                        "checkpoint": str(e.checkpoint)}))
        sys.exit(PREEMPTED_EXIT_CODE)
    opt_bytes = 0
    ckpt = Path(out["checkpoint"]) / "deepspeed"
    for f in ckpt.glob(f"*rank_{rank}_*optim_states.pt") if ckpt.is_dir() else []:
        opt_bytes += f.stat().st_size
    d_sum = out["method_state_sum"]        # this rank's discriminator heads + optimizer, in memory
    line = json.dumps({"rank": out["rank"], "world_size": out["world_size"], "backend": out["backend"], "d_sum": d_sum,
                       "losses": out["losses"], "optimizer_file_bytes": opt_bytes,
                       "optimizer_state_bytes": out["optimizer_state_bytes"],
                       "weights_bytes_held": out["weights_bytes_held"]})
    (Path(a.out) / f"result_rank{rank}.json").write_text(line)   # ranks share stdout; files do not interleave
    print(line, flush=True)


if __name__ == "__main__":
    main()
