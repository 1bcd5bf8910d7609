"""Elastic training benchmark: the same training run undisturbed and with a rank killed (SIGKILL)
every ``--kill-every`` steps and restarted, side by side (ringpress.torch.ElasticDataParallel).

    ringpress bench elastic [--nranks 4] [--steps 600] [--kill-every 100] [--compression int8]

A supervisor (this command) hosts the job's store (so it outlives every rank), starts
``--nranks`` ranks on this host, and for the disturbed run kills a random live rank once the job
reaches each multiple of ``--kill-every`` steps, starting a replacement at once (it joins through
``ElasticDataParallel.join`` at the next step boundary and receives the model, optimizer state and
step counter from rank 0).

The task: a student MLP (``--width`` 512, 2 hidden layers, ~0.4M parameters) learns a fixed random
teacher's 10-class labels of 256-dimensional Gaussian inputs. Each step's global batch
(``--batch`` 512 rows, drawn from a generator seeded by the step) is split evenly over the live
ranks, so a run's gradients do not depend on how many ranks there are, except in the step a rank
dies in (its share is lost; the survivors average theirs). SGD, momentum 0.9, ``--lr`` 0.05.

Printed: optimizer steps taken, the final held-out loss of each run and their ratio, per kill the
time from the kill to the next completed step (what training loses) and the replacement's time
from its start to joining (process start, imports, join; reported separately), and whether every
rank ended with bit-identical parameters. JSON in bench/results/elastic.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ._common import results_dir, write_json
from .runner import ArgParser, BenchError

PREFIX = "elastic-bench"


# --------------------------------------------------------------------------- the rank


def _task(args: Any):
    import torch

    torch.manual_seed(1234)
    teacher = torch.nn.Sequential(
        torch.nn.Linear(256, 256), torch.nn.Tanh(), torch.nn.Linear(256, 10)
    )
    torch.manual_seed(99)
    model = torch.nn.Sequential(
        torch.nn.Linear(256, args.width),
        torch.nn.ReLU(),
        torch.nn.Linear(args.width, args.width),
        torch.nn.ReLU(),
        torch.nn.Linear(args.width, 10),
    )
    g = torch.Generator().manual_seed(7)
    x_test = torch.randn(4096, 256, generator=g)
    with torch.no_grad():
        y_test = teacher(x_test).argmax(1)

    def batch(step: int):
        gs = torch.Generator().manual_seed(1000 + step)
        x = torch.randn(args.batch, 256, generator=gs)
        with torch.no_grad():
            y = teacher(x).argmax(1)
        return x, y

    return model, batch, (x_test, y_test)


def worker(args: Any) -> int:
    import numpy as np
    import torch
    from ringpress import Communicator, _core
    from ringpress.torch.elastic import ElasticDataParallel

    t_start = float(os.environ["RP_ELASTIC_T0"])
    torch.set_num_threads(1)
    key = os.environ["RP_ELASTIC_KEY"]
    store = _core.TCPStore("127.0.0.1", int(os.environ["RP_ELASTIC_PORT"]), 60000, key=key)
    model, batch, (x_test, y_test) = _task(args)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    kw = {"compression": args.compression} if args.compression != "none" else {}

    def say(**rec):
        print("@@" + json.dumps(rec), flush=True)

    if os.environ.get("RP_ELASTIC_JOIN") == "1":
        ft = ElasticDataParallel.join(
            model, opt, store, prefix=PREFIX, timeout=args.timeout, job_key=key, **kw
        )
        say(event="joined", step=ft.step, t=time.time(), startup=time.time() - t_start)
    else:
        comm = Communicator(
            store,
            int(os.environ["RANK"]),
            int(os.environ["WORLD_SIZE"]),
            prefix=PREFIX,
            timeout=args.timeout,
            job_key=key,
        )
        ft = ElasticDataParallel(model, opt, comm, **kw)
    seen = len(ft.events)
    while ft.step < args.steps:
        x, y = batch(ft.step)
        lo = ft.rank * args.batch // ft.size
        hi = (ft.rank + 1) * args.batch // ft.size
        opt.zero_grad()
        loss_fn(model(x[lo:hi]), y[lo:hi]).backward()
        ft.sync_and_step()
        if ft.rank == 0:
            say(event="step", step=ft.step, t=time.time(), size=ft.size)
        if args.wait_for_replacements and ft.step < args.steps:
            ft.admit(wait_for=args.nranks, timeout=args.timeout)
        else:
            ft.admit()
        for e in ft.events[seen:]:
            say(**e)
        seen = len(ft.events)
    with torch.no_grad():
        test_loss = float(loss_fn(model(x_test), y_test))
    digest = hashlib.sha256(
        b"".join(p.detach().numpy().tobytes() for p in model.parameters())
    ).hexdigest()
    digests = ft.comm.allgather(np.frombuffer(bytes.fromhex(digest), np.uint8).copy())
    say(
        event="done",
        rank=ft.rank,
        steps=ft.step,
        test_loss=test_loss,
        identical=bool((digests == digests[0]).all()),
    )
    ft.comm.close()
    return 0


# --------------------------------------------------------------------------- the supervisor


def _run(args: Any, kill_every: int, seed: int) -> dict:
    from ringpress import _core

    key = "elastic-bench-" + os.urandom(16).hex()
    srv = _core.TCPStoreServer("127.0.0.1", 0, key=key)
    records: list[dict] = []
    lock = threading.Lock()
    procs: dict[int, subprocess.Popen] = {}
    spawned: dict[int, float] = {}
    argv = (
        [sys.executable, "-m", "ringpress_bench", "elastic", "--worker"]
        + [
            f"--{k.replace('_', '-')}={v}"
            for k, v in vars(args).items()
            if k in ("steps", "batch", "width", "lr", "compression", "timeout", "nranks")
        ]
        + (["--wait-for-replacements"] if args.wait_for_replacements else [])
    )

    def read(i: int, p: subprocess.Popen) -> None:
        for line in p.stdout:
            if line.startswith("@@"):
                rec = json.loads(line[2:])
                rec["proc"] = i
                with lock:
                    records.append(rec)

    def spawn(i: int, extra: dict) -> None:
        env = dict(os.environ)
        env.update(
            RP_ELASTIC_PORT=str(srv.port),
            RP_ELASTIC_KEY=key,
            RP_ELASTIC_T0=repr(time.time()),
            OMP_NUM_THREADS="1",
            **extra,
        )
        spawned[i] = time.time()
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, text=True)
        procs[i] = p
        threading.Thread(target=read, args=(i, p), daemon=True).start()

    t0 = time.time()
    for r in range(args.nranks):
        spawn(r, {"RANK": str(r), "WORLD_SIZE": str(args.nranks)})
    rng = random.Random(seed)
    kills = []
    next_kill = kill_every if kill_every else None
    try:
        while True:
            with lock:
                steps = [r["step"] for r in records if r["event"] == "step"]
                done = [r for r in records if r["event"] == "done"]
            joined = {r["proc"] for r in records if r["event"] == "joined"}
            if done and all(
                p.poll() is not None or (i >= args.nranks and i not in joined)
                for i, p in procs.items()
            ):
                break  # every member is done (a replacement still starting is not one)
            bad = [i for i, p in procs.items() if p.poll() not in (None, 0, -9)]
            if bad:
                with lock:
                    tail = [r for r in records if r["event"] != "step"][-8:]
                    last = [r for r in records if r["event"] == "step"][-1:]
                raise BenchError(
                    f"rank process(es) {bad} failed (exit {procs[bad[0]].returncode}); "
                    f"last step {last}, last events {tail}"
                )
            if time.time() - t0 > args.max_seconds:
                raise BenchError(f"the run did not finish in {args.max_seconds} s")
            if next_kill and steps and steps[-1] >= next_kill and next_kill < args.steps:
                with lock:
                    joined = {r["proc"] for r in records if r["event"] == "joined"}
                members = [
                    i
                    for i, p in procs.items()
                    if p.poll() is None and (i < args.nranks or i in joined)
                ]
                victim = rng.choice(members)
                t_kill = time.time()
                os.kill(procs[victim].pid, signal.SIGKILL)
                procs[victim].wait()
                new = len(procs)
                spawn(new, {"RP_ELASTIC_JOIN": "1"})
                kills.append({"step": steps[-1], "victim": victim, "t": t_kill, "replacement": new})
                next_kill += kill_every
            time.sleep(0.002)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    wall = time.time() - t0
    steps_t = [(r["step"], r["t"]) for r in records if r["event"] == "step"]
    for k in kills:
        after = [t for _, t in steps_t if t > k["t"]]
        k["to_next_step_s"] = (after[0] - k["t"]) if after else None
        joined = [r for r in records if r["event"] == "joined" and r["proc"] == k["replacement"]]
        k["replacement_start_to_join_s"] = joined[0]["startup"] if joined else None
    done = [r for r in records if r["event"] == "done"]
    return {
        "wall_s": wall,
        "steps": sorted({r["steps"] for r in done}),
        "test_loss": done[0]["test_loss"],
        "identical": all(r["identical"] for r in done) and len({r["test_loss"] for r in done}) == 1,
        "final_size": len(done),
        "kills": kills,
        "recoveries": [r for r in records if r["event"] == "recovered"],
    }


def main(argv: list[str] | None = None, prog: str = "ringpress bench elastic") -> int:
    ap = ArgParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--nranks", type=int, default=4)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--kill-every", type=int, default=100)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--compression", default="none", help="none, bf16, int8, ... (error feedback)")
    ap.add_argument("--timeout", type=float, default=30.0, help="the communicator's timeout (s)")
    ap.add_argument("--max-seconds", type=float, default=900.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--wait-for-replacements",
        action="store_true",
        help="after a kill, the survivors finish the step, then wait for the replacement "
        "(default: they train on without it until it joins)",
    )
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse_hidden())
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.nranks < 2 or args.steps < 1 or args.kill_every < 0:
        ap.error("--nranks >= 2, --steps >= 1, --kill-every >= 0")
    print(
        f"elastic training: {args.nranks} ranks, {args.steps} steps, a rank killed every "
        f"{args.kill_every} steps and restarted; compression {args.compression}",
        flush=True,
    )
    base = _run(args, 0, args.seed)
    hit = _run(args, args.kill_every, args.seed)
    ratio = hit["test_loss"] / base["test_loss"]
    print(f"{'run':<12} {'steps':>6} {'held-out loss':>14} {'wall':>8} {'identical':>10}")
    for name, r in (("undisturbed", base), ("killed", hit)):
        print(
            f"{name:<12} {','.join(map(str, r['steps'])):>6} {r['test_loss']:>14.5f} "
            f"{r['wall_s']:>7.1f}s {r['identical']!s:>10}"
        )
    print(f"held-out loss, killed / undisturbed: {ratio:.4f}")
    joined = sum(k["replacement_start_to_join_s"] is not None for k in hit["kills"])
    print(
        f"{len(hit['kills'])} kills, {joined} replacements joined before the end, "
        f"{hit['final_size']} ranks at the end"
    )
    for k in hit["kills"]:
        nxt = k["to_next_step_s"]
        rep = k["replacement_start_to_join_s"]
        print(
            f"kill at step {k['step']}: next step done {nxt:.3f} s after the kill; "
            f"replacement joined {rep:.2f} s after its start"
            if nxt is not None and rep is not None
            else f"kill at step {k['step']}: {k}"
        )
    out = {"args": vars(args), "undisturbed": base, "killed": hit, "loss_ratio": ratio}
    path = Path(args.json) if args.json else results_dir() / "elastic.json"
    write_json(out, path)
    if base["steps"] != [args.steps] or hit["steps"] != [args.steps]:
        raise BenchError(f"optimizer steps {base['steps']} / {hit['steps']}, not {args.steps}")
    if not (base["identical"] and hit["identical"]):
        raise BenchError("ranks ended with different parameters")
    return 0


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS
