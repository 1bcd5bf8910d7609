"""The training body that the Ray Train and Spark tests run on each rank (pickled by value).

Every rank fits the same linear model to its own shard of a synthetic regression problem, with
the model in DDP over the ``"ringpress"`` process group and ringpress's int8 gradient hook on it.
It returns what the tests check: the group's backend and size, an allreduce of rank + 1, the
loss before and after, the hook's step count, every rank's final weights and the SHA-256 of
every rank's job key (the tests compare them, never the key itself).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

STEPS = 60
FEATURES = 64


def train(rank: int, size: int) -> dict[str, Any]:
    """One rank's run in an initialised "ringpress" process group; returns its record."""
    import ringpress.torch
    import torch
    import torch.distributed as dist

    assert dist.get_rank() == rank and dist.get_world_size() == size
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)

    torch.manual_seed(0)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(FEATURES, 1))
    state = ringpress.torch.register(ddp, compression="int8")
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(100 + rank)
    w_true = torch.linspace(-1, 1, FEATURES)
    x = torch.randn(256, FEATURES, generator=gen)
    y = x @ w_true
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = ((ddp(x).squeeze(1) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())

    weights = torch.cat([p.detach().flatten() for p in ddp.parameters()])
    gathered = [torch.empty_like(weights) for _ in range(size)]
    dist.all_gather(gathered, weights)
    key = os.environ.get("RINGPRESS_JOB_KEY", "")
    digests: list[Any] = [None] * size
    dist.all_gather_object(digests, hashlib.sha256(key.encode()).hexdigest() if key else "")
    return {
        "rank": rank,
        "size": size,
        "backend": str(dist.get_backend()),
        "sum": t.item(),
        "first": losses[0],
        "last": losses[-1],
        "hook_steps": state.iteration,
        "weights": [g.tolist() for g in gathered],
        "key_digests": digests,
        "stats": {k: int(v) for k, v in ringpress.torch.stats().items() if isinstance(v, int)},
    }


def ray_worker(config: dict[str, Any]) -> None:
    """A Ray Train worker (its group already made by RingpressConfig): train, write the record
    to ``config["out"]/rank<r>.json``."""
    import json

    import torch.distributed as dist

    record = train(dist.get_rank(), dist.get_world_size())
    with open(os.path.join(config["out"], f"rank{record['rank']}.json"), "w") as f:
        json.dump(record, f)


def join_and_train(key: str) -> dict[str, Any]:
    """A rank started by a launcher (torchrun under Spark): take the job key from the driver,
    join the "ringpress" group from the launcher's environment, train."""
    os.environ["RINGPRESS_JOB_KEY"] = key
    import ringpress.torch  # noqa: F401  (registers the "ringpress" backend)
    import torch.distributed as dist

    dist.init_process_group("ringpress")
    try:
        return train(dist.get_rank(), dist.get_world_size())
    finally:
        dist.destroy_process_group()


def check(record: dict[str, Any], size: int) -> None:
    """What every integration test asserts about a rank's record."""
    assert record["backend"] == "ringpress"
    assert record["size"] == size
    assert record["sum"] == size * (size + 1) / 2
    assert record["hook_steps"] == STEPS  # the compressed hook averaged every step's gradients
    assert record["last"] < 0.01 * record["first"], (record["first"], record["last"])
    ws = record["weights"]
    assert all(w == ws[0] for w in ws), "ranks' weights differ after training"
    digests = record["key_digests"]
    assert digests[0] and all(d == digests[0] for d in digests), (
        "ranks' job keys differ or are missing"
    )
    assert record["stats"].get("ops", 0) > STEPS
