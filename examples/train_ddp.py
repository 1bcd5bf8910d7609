"""DDP on the ringpress backend with the compressing comm hook: a small character model on the
Python standard library's source, 2 ranks on this machine.

    torchrun --nproc-per-node 2 examples/train_ddp.py [--compression int8] [--steps 200]

Each rank trains on its own batches; DDP averages the gradients through ringpress (int8 on the
wire, with error feedback). Rank 0 prints the training loss, the held-out loss and the bytes sent.
The model and data are the ones ``ringpress bench train`` measures, at a smaller width (from the
benchmarks' package, ``ringpress_bench``: ``pip install ./bench``).
"""

import argparse
import os

import ringpress.torch  # registers the "ringpress" backend
import torch
import torch.distributed as dist
import torch.nn.functional as F
from ringpress_bench.train import CharData, heldout_loss, make_model
from torch.nn.parallel import DistributedDataParallel as DDP

ap = argparse.ArgumentParser()
ap.add_argument("--compression", default="int8", choices=ringpress.torch.KINDS)
ap.add_argument("--steps", type=int, default=200)
ap.add_argument("--width", type=int, default=512)
ap.add_argument("--batch", type=int, default=64)
args = ap.parse_args()

dist.init_process_group("ringpress")  # env:// (torchrun sets RANK, WORLD_SIZE, MASTER_*)
rank, world = dist.get_rank(), dist.get_world_size()
torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))

data = CharData.load(data_mb=8.0, context=32)
torch.manual_seed(0)  # the same initial parameters on every rank
model = DDP(make_model(len(data.vocab), width=args.width, depth=3), bucket_cap_mb=2)
# The hook, bound to the parameter names so that state.state_dict() can be checkpointed.
state = ringpress.torch.register(model, compression=args.compression)
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
held = data.held_out(1024)

for step in range(args.steps):
    x, y = data.batch(args.batch, seed=0, rank=rank, step=step)  # this rank's own batch
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()  # buckets are averaged (compressed) while backward runs
    opt.step()
    if rank == 0 and (step % 20 == 0 or step == args.steps - 1):
        print(f"step {step:4d}  train loss {loss.item():.3f}", flush=True)

loss = heldout_loss(model.module, *held)
if rank == 0:
    sent = ringpress.torch.stats()["bytes_sent"]
    print(
        f"held-out loss {loss:.3f} nats/char; {args.compression}: {sent / 2**20:.1f} MiB sent "
        f"by rank 0; hook kinds used: {state.kinds_used}"
    )
dist.destroy_process_group()
