"""One rank of the recovery tests (test_recovery.py starts it; not a test module itself).

A loop of collectives whose inputs depend only on the iteration and on each member's identity
(ORIG, stable across renumbering), so every result can be checked exactly (int8: within its
bound). When a call raises TransportError/TimeoutError the survivors shrink, agree on the
iteration to resume from (the lowest any of them had not finished), and go on. Every iteration
the members call grow(), which admits a replacement the test has started (JOIN=1: this process is
one; it learns the iteration to start from). A shrink may admit replacements too (a member lost
during a grow: comm.joined); after every re-formation all ranks run the same two collectives
(who the members are, where to resume). Prints one JSON record per line ("@@{...}").

The loop runs until the test sets the counter "stop" in its store (read at every GATE-th
iteration). Environment: ORIG (identity), RANK, SIZE (members only), PORT (the test's store),
TRANSPORT, TARGET (the size the job waits to get back to at every GATE-th
iteration), JOIN=1 (a replacement), RP_TEST_KEY (the job key).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import numpy as np
import ringpress as rp
from ringpress import _core

ORIG = int(os.environ["ORIG"])
TARGET = int(os.environ["TARGET"])  # members the job wants: it waits for replacements at gates
GATE = 15  # every GATE iterations a job short of TARGET waits until replacements have joined
KEY = os.environ["RP_TEST_KEY"]
PREFIX = "recovery-test"
N_BIG = 1 << 17  # 512 KiB of float32: long enough to be killed inside


def emit(**x) -> None:
    print("@@" + json.dumps(x), flush=True)


def members_of(comm) -> list[int]:
    ids = comm.allgather(np.array([ORIG], np.int64))
    return [int(v) for v in ids.reshape(-1)]


def weight(orig: int) -> int:
    return orig + 1


def check(it: int, comm, members: list[int]) -> None:
    """Iteration `it`'s collective, checked against what the members' inputs give."""
    total = sum(weight(o) for o in members)
    kind = it % 5
    if kind in (0, 1):
        # Plain and int8-compressed allreduce of a pattern scaled by the member's weight.
        pat = ((np.arange(N_BIG) + it) % 7 + 1).astype(np.float32)
        x = pat * weight(ORIG)
        if kind == 0:
            comm.allreduce(x)
            if not np.array_equal(x, pat * total):
                raise AssertionError(f"allreduce at iteration {it}: wrong sum")
        else:
            comm.allreduce(x, compression="int8")
            err = float(np.max(np.abs(x - pat * total)))
            bound = 0.02 * 7 * total * len(members)
            if not err <= bound:
                raise AssertionError(f"int8 allreduce at iteration {it}: error {err} > {bound}")
    elif kind == 2:
        root = it % comm.size
        x = np.full(4096, weight(ORIG), np.int64)
        comm.broadcast(x, root=root)
        if not np.all(x == weight(members[root])):
            raise AssertionError(f"broadcast at iteration {it}: not the root's data")
    elif kind == 3:
        g = comm.allgather(np.full(256, ORIG * 1000 + it, np.int64))
        want = np.array([[o * 1000 + it] * 256 for o in members], np.int64)
        if not np.array_equal(g, want):
            raise AssertionError(f"allgather at iteration {it}: wrong rows")
    else:
        comm.barrier()


def resume_point(comm, it: int) -> int:
    x = np.array([it], np.int64)
    comm.allreduce(x, op="min")
    return int(x[0])


def main() -> int:
    store = _core.TCPStore("127.0.0.1", int(os.environ["PORT"]), 60000, key=KEY)
    transport = os.environ.get("TRANSPORT", "auto")
    t0 = time.time()
    if os.environ.get("JOIN") == "1":
        comm = rp.Communicator.join(
            store, prefix=PREFIX, timeout=20, transport=transport, job_key=KEY
        )
        it = 1 << 62  # the members' resume point wins (a min allreduce right after joining)
    else:
        comm = rp.Communicator(
            store,
            int(os.environ["RANK"]),
            int(os.environ["SIZE"]),
            prefix=PREFIX,
            timeout=20,
            transport=transport,
            job_key=KEY,
        )
        it = 0
        emit(event="ready", orig=ORIG, rank=comm.rank, size=comm.size)
    just_grown = os.environ.get("JOIN") == "1"
    members: list[int] = []
    recoveries = 0

    def emit_grown(comm, members, it):
        emit(
            event="grown",
            orig=ORIG,
            epoch=comm.epoch,
            members=members,
            it=it,
            t=round(time.time() - t0, 3),
        )

    while True:
        try:
            if just_grown:
                # Members and joiners: the new membership, then where to go on from.
                members = members_of(comm)
                it = resume_point(comm, it)
                emit_grown(comm, members, it)
                just_grown = False
            if not members:
                members = members_of(comm)
            if it % GATE == 0 and not just_grown:
                # The test says when to stop (a counter in its store), read by rank 0.
                stop = np.array([store.add("stop", 0) if comm.rank == 0 else 0], np.int64)
                comm.broadcast(stop, root=0)
                if stop[0]:
                    break
            check(it, comm, members)
            it += 1
            if it % 5 == 0:
                emit(event="progress", orig=ORIG, it=it)
            deadline = time.time() + 30
            while True:
                grown = comm.grow()
                if grown is not comm:
                    comm = grown
                    just_grown = True
                    break
                if it % GATE or comm.size >= TARGET:
                    break
                if time.time() > deadline:
                    raise AssertionError(f"no replacement joined within 30 s (size {comm.size})")
                time.sleep(0.005)
        except (rp.TransportError, rp.TimeoutError) as e:
            t_fail = time.time()
            failed_at = it
            error = type(e).__name__
            while True:
                try:
                    comm = comm.shrink()
                    members = members_of(comm)
                    it = resume_point(comm, it)
                    break
                except (rp.TransportError, rp.TimeoutError) as e2:
                    if "left this rank out" in str(e2):
                        emit(event="left_out", orig=ORIG)
                        return 5
                    error = type(e2).__name__  # another failure while recovering: shrink again
            recoveries += 1
            emit(
                event="recovered",
                orig=ORIG,
                epoch=comm.epoch,
                members=members,
                it=it,
                failed_at=failed_at,
                left_out=comm.left_out,
                joined=comm.joined,
                seconds=round(time.time() - t_fail, 4),
                error=error,
            )
            if comm.joined:  # the shrink admitted the joiners of a grow that failed on its way
                emit_grown(comm, members, it)
    # Every rank ends with the same bytes: a final allreduce's digest.
    x = ((np.arange(1 << 16) * (ORIG + 3)) % 1013).astype(np.float32)
    comm.allreduce(x)
    emit(
        event="done",
        orig=ORIG,
        epoch=comm.epoch,
        members=members,
        rank=comm.rank,
        recoveries=recoveries,
        digest=hashlib.sha256(x.tobytes()).hexdigest(),
    )
    comm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
