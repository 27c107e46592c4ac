"""One rank of a 2-process gloo job that ends right after an all-reduce (run by tests/test_exit_teardown.py)."""
import sys

import torch

from tdd_video.engine.distributed import tear_down_at_exit

torch.distributed.init_process_group("gloo")
if "--hook" in sys.argv[1:]:
    tear_down_at_exit()
x = torch.ones(1)
torch.distributed.all_reduce(x)
