"""Launching under SLURM: Communicator.from_env reads SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID,
the first host of the compressed node list and a port derived from the job id, after every other
launcher's variables (docs/configuration.md, "Launchers")."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ranks import collect
from ringpress import comm as rpcomm
from ringpress.errors import UsageError

LAUNCHER_VARS = (
    "RINGPRESS_RANK",
    "RINGPRESS_WORLD_SIZE",
    "RINGPRESS_MASTER_ADDR",
    "RINGPRESS_MASTER_PORT",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "PMI_RANK",
    "PMI_SIZE",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_NPROCS",
    "SLURM_LOCALID",
    "SLURM_JOB_NODELIST",
    "SLURM_NODELIST",
    "SLURM_JOB_ID",
    "SLURM_JOBID",
)


# --------------------------------------------------------------------------- host lists


@pytest.mark.parametrize(
    ("text", "hosts"),
    [
        ("node01", ["node01"]),
        ("node[01-03,07],gpu5", ["node01", "node02", "node03", "node07", "gpu5"]),
        ("n[8-10]", ["n8", "n9", "n10"]),  # no padding: widths grow
        ("n[008-010]", ["n008", "n009", "n010"]),  # padding of the low bound kept
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),  # several groups: a product
        ("a[1,3]-ib,b.c_d", ["a1-ib", "a3-ib", "b.c_d"]),
        ("x[5]", ["x5"]),
    ],
)
def test_expand_hostlist(text, hosts):
    assert rpcomm.expand_hostlist(text) == hosts
    assert rpcomm.first_host(text) == hosts[0]


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "node[1-3",
        "node1-3]",
        "node[[1-2]]",
        "node[]",
        "node[3-1]",
        "node[a-b]",
        "node[1-2-3]",
        "node[1,,2]",
        "a,,b",
        ",a",
        "a,",
        "[1-2]",
        "node 1",
        "node;rm",
        "n[1-999999999]",  # more than a million hosts
        "n[١-٣]",  # non-ASCII digits
    ],
)
def test_garbage_host_lists_are_usage_errors(text):
    with pytest.raises(UsageError, match="Slurm host list"):
        rpcomm.expand_hostlist(text)
    if "999999999" not in text:  # first_host checks the syntax without expanding
        with pytest.raises(UsageError, match="Slurm host list"):
            rpcomm.first_host(text)


_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-._", min_size=1, max_size=6)
_range = st.tuples(st.integers(0, 200), st.integers(0, 5), st.integers(1, 4))  # lo, span, width


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_name, st.lists(_range, min_size=0, max_size=3), _name), min_size=1))
def test_compressed_lists_expand_to_what_they_compress(entries):
    """A list built from (prefix, ranges, suffix) expands to the hosts it was built from."""
    texts, expected = [], []
    for prefix, ranges, suffix in entries:
        if not ranges:
            texts.append(prefix)
            expected.append(prefix)
            continue
        items = [
            f"{lo:0{w}d}" if span == 0 else f"{lo:0{w}d}-{lo + span:0{w}d}"
            for lo, span, w in ranges
        ]
        texts.append(f"{prefix}[{','.join(items)}]{suffix}")
        expected += [
            f"{prefix}{v:0{w}d}{suffix}" for lo, span, w in ranges for v in range(lo, lo + span + 1)
        ]
    text = ",".join(texts)
    assert rpcomm.expand_hostlist(text) == expected
    assert rpcomm.first_host(text) == expected[0]


# --------------------------------------------------------------------------- launch_env


@pytest.fixture
def clean_env(monkeypatch):
    for v in LAUNCHER_VARS:
        monkeypatch.delenv(v, raising=False)
    return monkeypatch


def _slurm(mp, procid=1, ntasks=4, localid=1, nodes="node[07-08]", job="123456"):
    mp.setenv("SLURM_PROCID", str(procid))
    mp.setenv("SLURM_NTASKS", str(ntasks))
    mp.setenv("SLURM_LOCALID", str(localid))
    mp.setenv("SLURM_JOB_NODELIST", nodes)
    mp.setenv("SLURM_JOB_ID", job)


def test_slurm_variables(clean_env):
    _slurm(clean_env)
    got = rpcomm.launch_env()
    assert got == rpcomm.LaunchEnv("slurm", 1, 4, 1, "node07", 20000 + 123456 % 10000)
    clean_env.setenv("MASTER_PORT", "31000")
    clean_env.setenv("MASTER_ADDR", "10.1.2.3")
    assert rpcomm.launch_env()[4:] == ("10.1.2.3", 31000)
    clean_env.setenv("RINGPRESS_MASTER_PORT", "31001")
    clean_env.setenv("RINGPRESS_MASTER_ADDR", "10.1.2.4")
    assert rpcomm.launch_env()[4:] == ("10.1.2.4", 31001)


def test_slurm_nodelist_fallbacks_and_errors(clean_env):
    _slurm(clean_env)
    clean_env.delenv("SLURM_JOB_NODELIST")
    clean_env.setenv("SLURM_NODELIST", "gpu[3-4]")
    assert rpcomm.launch_env().master_addr == "gpu3"
    clean_env.setenv("SLURM_NODELIST", "gpu[3-")
    with pytest.raises(UsageError, match=r"bad Slurm host list 'gpu\[3-'"):
        rpcomm.launch_env()
    clean_env.delenv("SLURM_NODELIST")
    with pytest.raises(UsageError, match="SLURM_JOB_NODELIST"):
        rpcomm.launch_env()
    _slurm(clean_env)
    clean_env.delenv("SLURM_JOB_ID")
    with pytest.raises(UsageError, match="SLURM_JOB_ID or MASTER_PORT"):
        rpcomm.launch_env()
    _slurm(clean_env)
    clean_env.delenv("SLURM_NTASKS")
    with pytest.raises(UsageError, match="SLURM_NTASKS"):
        rpcomm.launch_env()
    clean_env.setenv("SLURM_NPROCS", "4")
    assert rpcomm.launch_env().size == 4
    _slurm(clean_env, procid=4, ntasks=4)
    with pytest.raises(UsageError, match="rank 4 of 4"):
        rpcomm.launch_env()


def test_other_launchers_come_before_slurm(clean_env):
    _slurm(clean_env)
    clean_env.setenv("MASTER_PORT", "31000")
    for rank_var, size_var in (
        ("RANK", "WORLD_SIZE"),
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
        ("PMI_RANK", "PMI_SIZE"),
        ("RINGPRESS_RANK", "RINGPRESS_WORLD_SIZE"),
    ):
        clean_env.setenv(rank_var, "0")
        clean_env.setenv(size_var, "2")
        got = rpcomm.launch_env()
        assert (got.launcher, got.rank, got.size) == ("env", 0, 2), rank_var
        # not SLURM: no node list as the master address
        assert got.master_addr == "127.0.0.1"
        clean_env.delenv(rank_var)
        clean_env.delenv(size_var)
    assert rpcomm.launch_env().launcher == "slurm"


def test_nothing_set_is_a_usage_error(clean_env):
    with pytest.raises(UsageError, match="RANK and WORLD_SIZE"):
        rpcomm.launch_env()


# --------------------------------------------------------------------------- real ranks

BODY = """
import json, os, sys
import numpy as np
import ringpress as rp
comm = rp.Communicator.from_env(timeout=60)
x = np.full(1000, comm.rank + 1, np.float32)
comm.allreduce(x)
print("@@" + json.dumps({
    "rank": comm.rank, "size": comm.size, "launch": list(comm.launch),
    "sum": float(x[0]), "all": bool((x == x[0]).all()),
    "transport": [comm.transport(q) for q in range(comm.size)],
}), flush=True)
comm.close()
"""


def _slurm_port() -> int:
    """A port in the SLURM range that is free now."""
    for port in range(20000 + os.getpid() % 9000, 30000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port in 20000-29999")


def test_three_ranks_under_slurm_variables():
    """Three real processes with only srun's variables (no RANK, no MASTER_*): they find each
    other at the first host of the node list and a port derived from the job id."""
    port = _slurm_port()
    job = 4_200_000 + (port - 20000)  # SLURM_PORT_BASE + job % 10000 == port
    fd, path = tempfile.mkstemp(suffix=".py", prefix="rp_slurm_")
    with os.fdopen(fd, "w") as f:
        f.write(textwrap.dedent(BODY))
    procs = []
    for r in range(3):
        env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
        env.update(
            SLURM_PROCID=str(r),
            SLURM_NTASKS="3",
            SLURM_LOCALID=str(r),
            SLURM_JOB_NODELIST="localhost,node[02-03]",
            SLURM_JOB_ID=str(job),
            PYTHONUNBUFFERED="1",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, path],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = collect(procs, path, timeout=90)
    for res in results:
        assert res.returncode == 0, res.stderr[-3000:]
        (rec,) = res.records
        assert rec["rank"] == res.rank and rec["size"] == 3
        assert rec["launch"] == ["slurm", res.rank, 3, res.rank, "localhost", port]
        assert rec["sum"] == 6.0 and rec["all"]
        assert rec["transport"][res.rank] == "self"
