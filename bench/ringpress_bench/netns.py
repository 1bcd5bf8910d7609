"""Network-namespace harness: N hosts on one machine, each a network namespace holding L ranks,
joined by rate-limited links, so a benchmark sees a 1 or 10 Gbit/s network between hosts instead
of loopback (and shared memory within a host, as on a real cluster node).

Topology (all interfaces live inside the namespaces; nothing is added to the host's namespace)
    P ranks, L per host (``--ranks-per-host``, default 1): N = ceil(P / L) hosts. Placement
    ``block`` (default): rank r on host r // L (the last host may have fewer); ``cyclic``: rank r
    on host r % N (common under SLURM's cyclic distribution; every ring neighbour is remote).
    N == 2: one veth pair, ``<prefix>-0`` <-> ``<prefix>-1``.
    N > 2:  a Linux bridge ``rpbr`` inside a hub namespace ``<prefix>-hub``, and one veth pair per
            host between the hub (port ``p<h>``) and ``<prefix>-<h>``.
    In every host namespace the link is called ``rpveth`` and ``lo`` is up. Host h has address
    ``10.233.<k>.<h+1>/24`` (one host alone: 127.0.0.1, only ``lo``). Namespaces isolate
    addresses, so the subnet cannot clash with the host's; ``k`` differs between runs anyway, so
    that addresses stay distinct if one ever leaks. ``<prefix>`` is ``rpb<pid>_<n>`` (creating
    process, per-process counter), so concurrent runs and tests never collide and
    ``cleanup_stale()`` can tell a dead run's leftovers. With L == 1 a host is a rank: the
    namespace of rank r is ``<prefix>-<r>``, as before hosts existed.

Shaping
    ``tc qdisc add dev rpveth root tbf rate R burst B latency L`` on every host's egress (``--rate
    1gbit``, ``10gbit``, any tc rate such as ``2.5gbit``, or ``none``), and with a bridge the same
    on the hub's port toward each host (the host's ingress), so a host's link carries at most R
    each way however many peers send to it at once, like a full-duplex NIC; the L ranks of a host
    share it. With two hosts each side's egress is the other's ingress. B = max(128 KiB, 4 ms of R): tbf releases at
    most B bytes per wake-up of its timer, and wake-ups come late when the CPUs are busy (as they
    are during a benchmark on 2 cores) or, without high-resolution timers, only at HZ (250 here).
    Measured at 10gbit with both cores busy: burst 0.1 ms of R -> 7.0 Gbit/s, 1 ms -> 8.8,
    4 ms -> 9.4 (idle: 9.5 for all three). 128 KiB also holds a 64 KiB GSO super-packet whole,
    so tbf never has to segment one in software. After an idle spell a full bucket lets B bytes
    (4 ms worth) through at line speed; over a transfer of 100 ms or more that is a few per
    cent. L = 20 ms of queue (plus the burst); TCP between namespaces has a round trip of tens of
    microseconds, so the queue never limits throughput, and it is short enough that drops still
    pace the sender. Measured with ``--check`` (TCP payload, so ~4% under R for headers): 0.96
    Gbit/s at 1gbit, 9.6 at 10gbit, 24 unshaped veth on this 2-core VM.

Processes
    ``Topology.launch(cmd)`` starts ``ip netns exec <ns> cmd`` for every rank (``ip netns exec``
    execs the command, so the pid is the command's), each in its own session, with RANK,
    WORLD_SIZE, LOCAL_RANK / LOCAL_WORLD_SIZE (index and count on its host), GROUP_RANK (the host),
    MASTER_ADDR (rank 0's host's address), MASTER_PORT, RINGPRESS_TRANSPORT (tcp with one rank per
    host, else auto: shared memory between ranks of a host, TCP across), RINGPRESS_SOCKET_IFNAME
    and GLOO_SOCKET_IFNAME = rpveth, and RINGPRESS_NETNS_RATE / _NRANKS / _HOSTS /
    _RANKS_PER_HOST / _PLACEMENT (so a benchmark can record the network it ran on). Every
    namespace also gets an ``/etc/netns/<ns>/hosts`` mapping this host's name to the host's
    address (and ``host<h>``, ``rank<r>`` to theirs) (``ip netns exec``
    bind-mounts it over /etc/hosts), so libraries that find their own address by resolving the
    host name pick the rank's link rather than 127.0.0.1. If one rank fails, or the timeout
    passes, the other ranks' process groups get SIGTERM, then SIGKILL after a grace period
    (the process handling is ``launch.run_processes``, shared with ``ringpress bench``'s
    own local ranks).

Teardown
    On leaving the ``with`` block, on an exception, on SIGINT / SIGTERM / SIGHUP (turned into an
    exception while a Topology is live) and at interpreter exit: every launched process group is
    killed, any process still inside one of the namespaces is killed (``ip netns pids``), the
    namespaces are deleted (their veths and bridge go with them), the ``/etc/netns`` entries
    removed, and any ringpress shared-memory segment a killed rank left is deleted. SIGKILL of
    the harness cannot be caught: for it each Topology starts a reaper first (a detached process
    reading a pipe only the harness holds; end of file = the harness is gone), which then removes
    the namespaces named ``<prefix>-*``, the processes in them, their /etc/netns entries and the
    shared memory they left (``remove_topology``). ``--cleanup`` removes what dead runs left
    should even the reaper have been killed.

Needs root (CAP_NET_ADMIN / CAP_SYS_ADMIN) and iproute2 (``ip``, ``tc``); stdlib only.

Usage (``python -m ringpress_bench netns`` is the same command)
    ringpress bench allreduce --link 1gbit ...       # the usual way: namespaces made and removed
    ringpress bench netns --nranks 2 --rate 1gbit [--timeout S] -- CMD ...
    ringpress bench netns --hosts 2 --ranks-per-host 2 --rate 1gbit -- CMD ...
    ringpress bench allreduce --hosts 4 --ranks-per-host 4 --link 1gbit [--placement cyclic]
    ringpress bench netns --check --rate 1gbit       # measured TCP throughput host 1 -> host 0
    ringpress bench netns --cleanup                  # remove leftovers of dead runs
A command word ``python`` / ``python3`` is replaced by this interpreter (``sys.executable``), so
the ranks use the same virtual environment; the working directory is kept.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from .launch import (
    KILL_GRACE_S,
    Interrupted,
    LaunchResult,
    connect_with_retry,
    install_signal_handlers,
    job_key_env,
    python_argv,
    remove_shm_segments,
    restore_signal_handlers,
    run_processes,
    signals_blocked,
)
from .launch import stop as _stop

__all__ = [
    "Interrupted",
    "LaunchResult",
    "NetnsError",
    "Topology",
    "cleanup_stale",
    "list_namespaces",
    "measure_throughput",
    "namespace_pids",
    "parse_rate",
    "preflight",
    "tbf_burst",
    "topology",
]

PREFIX = "rpb"  # every namespace this harness creates is named rpb<pid>_<n>-<rank|hub>
IFNAME = "rpveth"  # the rank's link inside each rank namespace
BRIDGE = "rpbr"
NETNS_ETC = "/etc/netns"
TBF_LATENCY_MS = 20
TBF_MIN_BURST = 128 << 10
TBF_BURST_SECONDS = 0.004
FIRST_PORT = 29500  # MASTER_PORT of the first launch; later launches step by PORT_STEP
PORT_STEP = 8  # MASTER_PORT .. +7 belong to one launch (bench allreduce uses +1, +2)
PLACEMENTS = ("block", "cyclic")
_REAPER_CODE = "from ringpress_bench.netns import _reaper_main; _reaper_main()"

_seq = itertools.count()
_live: set[Topology] = set()
_live_lock = threading.Lock()
_NAME_RE = re.compile(rf"^{PREFIX}(\d+)_(\d+)-(\w+)$")


class NetnsError(RuntimeError):
    """Setup failed or the environment cannot run the harness (message says why)."""


# --------------------------------------------------------------------------- helpers


def parse_rate(rate: str | None) -> int | None:
    """tc rate string -> bits per second; ``None`` / ``"none"`` / ``"0"`` -> no shaping."""
    if rate is None or str(rate).strip().lower() in ("", "none", "0", "off"):
        return None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(bit|bps)?\s*", str(rate).lower())
    if not m:
        raise ValueError(f"bad rate {rate!r}: use e.g. 1gbit, 10gbit, 500mbit or none")
    value = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[m.group(2)]
    if m.group(3) == "bps":  # tc: bps = bytes per second
        value *= 8
    if value <= 0:
        return None
    return int(value)


def tbf_burst(rate_bps: int) -> int:
    """Bucket size for ``rate_bps``: max(128 KiB, 4 ms of the rate); see the module docstring."""
    return max(TBF_MIN_BURST, int(rate_bps / 8 * TBF_BURST_SECONDS))


def preflight(need_tc: bool = True) -> None:
    """Raise NetnsError with a clear message unless this process can create namespaces."""
    if sys.platform != "linux":
        raise NetnsError("network namespaces need Linux")
    if os.geteuid() != 0:
        raise NetnsError(
            "network namespaces need root (CAP_NET_ADMIN, CAP_SYS_ADMIN): rerun as root, "
            "e.g. sudo -E .venv/bin/ringpress bench allreduce --link 1gbit"
        )
    for tool in ("ip", "tc") if need_tc else ("ip",):
        if shutil.which(tool) is None:
            raise NetnsError(f"'{tool}' not found: install iproute2 (apt-get install iproute2)")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and res.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)} failed: {res.stderr.strip() or res.returncode}")
    return res


def _veth(ns: str, name: str, peer_ns: str, peer_name: str) -> None:
    """A veth pair: ``name`` in namespace ``ns``, its other end ``peer_name`` in ``peer_ns``."""
    _ip("-n", ns, "link", "add", name, "type", "veth", "peer", "name", peer_name, "netns", peer_ns)


def list_namespaces() -> list[str]:
    """Names of all named network namespaces (``ip netns list``)."""
    res = _ip("netns", "list", check=False)
    return [line.split()[0] for line in res.stdout.splitlines() if line.strip()]


def namespace_pids(name: str) -> list[int]:
    res = _ip("netns", "pids", name, check=False)
    return [int(p) for p in res.stdout.split() if p.isdigit()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_pids(pids: Sequence[int]) -> None:
    for pid in pids:
        if pid == os.getpid():
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _delete_namespace(name: str) -> None:
    """Kill what still runs inside ``name``, then delete it; retries while the kernel lets go."""
    for _ in range(50):
        _kill_pids(namespace_pids(name))
        res = _ip("netns", "del", name, check=False)
        if res.returncode == 0 or name not in list_namespaces():
            break
        time.sleep(0.05)
    d = os.path.join(NETNS_ETC, name)
    if os.path.isdir(d):
        shutil.rmtree(d, ignore_errors=True)


def _remove_netns_etc_if_empty() -> None:
    with contextlib.suppress(OSError):
        os.rmdir(NETNS_ETC)  # only succeeds when empty: other tools' entries stay


def cleanup_stale(verbose: bool = True) -> list[str]:
    """Delete namespaces (and /etc/netns entries) of this harness whose creating process is gone."""
    removed = []
    names = set(list_namespaces())
    if os.path.isdir(NETNS_ETC):
        names |= set(os.listdir(NETNS_ETC))
    for name in sorted(names):
        m = _NAME_RE.match(name)
        if m and not _pid_alive(int(m.group(1))):
            _delete_namespace(name)
            removed.append(name)
            if verbose:
                print(f"removed {name}")
    _remove_netns_etc_if_empty()
    return removed


_python_argv = python_argv


# --------------------------------------------------------------------------- topology


class Topology:
    """``nranks`` ranks on network-namespace hosts joined by links shaped to ``rate``; a context
    manager. ``ranks_per_host`` ranks share each host's namespace (ceil(nranks / ranks_per_host)
    hosts; with ``placement`` "block" rank r is on host r // ranks_per_host, the last host may
    have fewer; "cyclic": rank r on host r % hosts).

    >>> with Topology(2, "1gbit") as topo:            # doctest: +SKIP
    ...     res = topo.launch(["python", "-m", "ringpress_bench", "allreduce"])
    >>> with Topology(4, "1gbit", ranks_per_host=2) as topo:   # 2 hosts x 2 ranks  # doctest: +SKIP
    ...     res = topo.launch(["python", "train.py"])
    """

    def __init__(
        self,
        nranks: int,
        rate: str | None = "1gbit",
        *,
        ranks_per_host: int = 1,
        placement: str = "block",
        mtu: int | None = None,
        hosts_file: bool = True,
        handle_signals: bool = True,
        reaper: bool = True,
    ) -> None:
        if nranks < 1:
            raise ValueError("nranks must be >= 1")
        if ranks_per_host < 1:
            raise ValueError("ranks_per_host must be >= 1")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
        self.nranks = nranks
        self.ranks_per_host = ranks_per_host
        self.placement = placement
        self.nhosts = -(-nranks // ranks_per_host)
        if self.nhosts > 250:
            raise ValueError("at most 250 hosts (one /24)")
        if self.nhosts == 1:
            self._host_of = [0] * nranks
        elif placement == "block":
            self._host_of = [r // ranks_per_host for r in range(nranks)]
        else:
            self._host_of = [r % self.nhosts for r in range(nranks)]
        self.rate = "none" if parse_rate(rate) is None else str(rate)
        self.rate_bps = parse_rate(rate)
        self.mtu = mtu
        self.hosts_file = hosts_file
        self.handle_signals = handle_signals
        self.use_reaper = reaper
        seq = next(_seq)
        self.prefix = f"{PREFIX}{os.getpid()}_{seq}"
        self.subnet = (os.getpid() + seq) % 250 + 1
        self.hub = f"{self.prefix}-hub" if self.nhosts > 2 else None
        self.ifname = IFNAME
        self._namespaces: list[str] = []  # created so far, in creation order
        self._procs: list[subprocess.Popen] = []
        self._pids: list[int] = []  # every rank process ever launched (for shm cleanup)
        self._launches = 0
        self._old_handlers: dict[int, Any] = {}
        self._made_netns_etc = False
        self._reaper: subprocess.Popen | None = None
        self._active = False

    # ---- names
    def host_of(self, rank: int) -> int:
        """The host (namespace index) rank ``rank`` runs on."""
        self._check_rank(rank)
        return self._host_of[rank]

    def ranks_on(self, host: int) -> list[int]:
        """The ranks on ``host``, in rank order (their LOCAL_RANK is the index in this list)."""
        self._check_host(host)
        return [r for r in range(self.nranks) if self._host_of[r] == host]

    def host_ns(self, host: int) -> str:
        self._check_host(host)
        return f"{self.prefix}-{host}"

    def host_addr(self, host: int) -> str:
        """Host's IPv4 address (127.0.0.1 with a single host: its namespace has only ``lo``)."""
        self._check_host(host)
        if self.nhosts == 1:
            return "127.0.0.1"
        return f"10.233.{self.subnet}.{host + 1}"

    def ns(self, rank: int) -> str:
        """The namespace rank ``rank`` runs in (its host's)."""
        return self.host_ns(self.host_of(rank))

    def addr(self, rank: int) -> str:
        """Rank's IPv4 address: its host's."""
        return self.host_addr(self.host_of(rank))

    def exec_prefix(self, rank: int) -> list[str]:
        """argv prefix that runs a command inside rank ``rank``'s namespace."""
        return self.exec_prefix_ns(self.ns(rank))

    @staticmethod
    def exec_prefix_ns(name: str) -> list[str]:
        return ["ip", "netns", "exec", name]

    def namespaces(self) -> list[str]:
        """Every namespace of this topology (hosts, then the hub if any)."""
        return [self.host_ns(h) for h in range(self.nhosts)] + ([self.hub] if self.hub else [])

    def _check_rank(self, rank: int) -> None:
        if not 0 <= rank < self.nranks:
            raise IndexError(f"rank {rank} out of range for {self.nranks} ranks")

    def _check_host(self, host: int) -> None:
        if not 0 <= host < self.nhosts:
            raise IndexError(f"host {host} out of range for {self.nhosts} hosts")

    # ---- lifecycle
    def __enter__(self) -> Topology:
        self.setup()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.teardown()

    def setup(self) -> None:
        preflight(need_tc=self.rate_bps is not None)
        with _live_lock:
            _live.add(self)
        self._active = True
        self._install_signal_handlers()
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise

    def _build(self) -> None:
        if self.use_reaper:
            self._start_reaper()
        for name in self.namespaces():
            _ip("netns", "add", name)
            self._namespaces.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        if self.nhosts == 2:
            _veth(self.host_ns(0), IFNAME, self.host_ns(1), IFNAME)
        elif self.nhosts > 2:
            assert self.hub is not None
            _ip("-n", self.hub, "link", "add", BRIDGE, "type", "bridge")
            _ip("-n", self.hub, "link", "set", BRIDGE, "up")
            for h in range(self.nhosts):
                port = f"p{h}"
                _veth(self.hub, port, self.host_ns(h), IFNAME)
                if self.mtu:
                    _ip("-n", self.hub, "link", "set", port, "mtu", str(self.mtu))
                _ip("-n", self.hub, "link", "set", port, "master", BRIDGE)
                _ip("-n", self.hub, "link", "set", port, "up")
                if self.rate_bps is not None:  # the host's ingress: the bridge's egress to it
                    self._shape(self.hub, port)
        hostname = socket.gethostname()
        for h in range(self.nhosts if self.nhosts > 1 else 0):
            ns = self.host_ns(h)
            if self.mtu:
                _ip("-n", ns, "link", "set", IFNAME, "mtu", str(self.mtu))
            _ip("-n", ns, "addr", "add", f"{self.host_addr(h)}/24", "dev", IFNAME)
            _ip("-n", ns, "link", "set", IFNAME, "up")
            if self.rate_bps is not None:
                self._shape(ns, IFNAME)
        for h in range(self.nhosts):
            if self.hosts_file:
                self._write_hosts(h, hostname)

    def _shape(self, ns: str, dev: str) -> None:
        assert self.rate_bps is not None
        rate, burst = str(self.rate_bps), str(tbf_burst(self.rate_bps))
        tbf = ["tbf", "rate", rate, "burst", burst, "latency", f"{TBF_LATENCY_MS}ms"]
        cmd = [*self.exec_prefix_ns(ns), "tc", "qdisc", "add", "dev", dev, "root", *tbf]
        res = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise NetnsError(f"{' '.join(cmd[4:])} failed in {ns}: {res.stderr.strip()}")

    def _start_reaper(self) -> None:
        """A watchdog process that removes this topology when we are gone, even by SIGKILL: it
        reads a pipe only we hold open; end of file means we exited (see _reaper_main)."""
        self._reaper = subprocess.Popen(
            [sys.executable, "-c", _REAPER_CODE, self.prefix],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # holds no pipe of ours open (a caller reading to EOF)
            start_new_session=True,  # a Ctrl-C at the terminal is ours to handle, not its
        )
        # It forks and its first process exits: the watchdog is nobody's child here (our
        # children are the ranks), and lives on after us.
        try:
            rc = self._reaper.wait(60)
        except subprocess.TimeoutExpired:
            rc = 0  # still starting (a loaded machine): it forks when it gets there
        if rc != 0:
            print(
                f"netns: warning: the reaper of {self.prefix} did not start: if this process is "
                "killed with SIGKILL, 'ringpress bench netns --cleanup' removes what it leaves",
                file=sys.stderr,
            )
            self._reaper = None

    def _stop_reaper(self) -> None:
        if self._reaper is None:
            return
        with contextlib.suppress(OSError):
            assert self._reaper.stdin is not None
            self._reaper.stdin.close()  # end of file: it checks (nothing left) and exits
        self._reaper = None

    def _write_hosts(self, host: int, hostname: str) -> None:
        if not os.path.isdir(NETNS_ETC):
            os.makedirs(NETNS_ETC, exist_ok=True)
            self._made_netns_etc = True
        d = os.path.join(NETNS_ETC, self.host_ns(host))
        os.makedirs(d, exist_ok=True)
        own = self.host_addr(host)
        lines = ["127.0.0.1 localhost", f"{own} {hostname}"]
        many = self.nhosts > 1
        lines += [f"{self.host_addr(h)} host{h}" for h in range(self.nhosts) if many]
        lines += [f"{self.addr(r)} rank{r}" for r in range(self.nranks) if many]
        # IPv4-mapped forms too: dual-stack servers (torch's TCPStore) look peers up by them, and
        # the host's DNS server is unreachable from inside a namespace.
        lines += [f"::ffff:{self.addr(r)} rank{r}" for r in range(self.nranks) if many]
        with open(os.path.join(d, "hosts"), "w") as f:
            f.write("\n".join(lines) + "\n")

    def teardown(self) -> None:
        """Kill every process, delete every namespace and /etc/netns entry; idempotent."""
        if not self._active:
            return
        with signals_blocked():  # a second Ctrl-C must not cut the cleanup short
            _stop(self._procs, grace=1.0)
            self._procs.clear()
            for name in reversed(self.namespaces()):
                if name in self._namespaces or os.path.isdir(os.path.join(NETNS_ETC, name)):
                    _delete_namespace(name)
            self._namespaces.clear()
            remove_shm_segments(self._pids)
            if self._made_netns_etc:
                _remove_netns_etc_if_empty()
            self._stop_reaper()
            self._active = False
            with _live_lock:
                _live.discard(self)
            self._restore_signal_handlers()

    def _install_signal_handlers(self) -> None:
        if self.handle_signals:
            self._old_handlers = install_signal_handlers()

    def _restore_signal_handlers(self) -> None:
        with _live_lock:
            live = bool(_live)
        restore_signal_handlers(self._old_handlers, still_live=live)

    # ---- processes
    def rank_env(self, rank: int, master_port: int) -> dict[str, str]:
        """The variables ``launch`` sets for ``rank`` (on top of the caller's environment)."""
        host = self.host_of(rank)
        local = self.ranks_on(host)
        ifname = IFNAME if self.nhosts > 1 else "lo"
        return {
            "RANK": str(rank),
            "WORLD_SIZE": str(self.nranks),
            "LOCAL_RANK": str(local.index(rank)),
            "LOCAL_WORLD_SIZE": str(len(local)),
            "GROUP_RANK": str(host),  # torchrun's name for the node index
            "MASTER_ADDR": self.addr(0),
            "MASTER_PORT": str(master_port),
            # one rank per host: every peer is remote; several: shm within the host
            "RINGPRESS_TRANSPORT": "tcp" if self.ranks_per_host == 1 else "auto",
            "RINGPRESS_SOCKET_IFNAME": ifname,
            "GLOO_SOCKET_IFNAME": ifname,
            "RINGPRESS_NETNS_RATE": self.rate,
            "RINGPRESS_NETNS_NRANKS": str(self.nranks),
            "RINGPRESS_NETNS_HOSTS": str(self.nhosts),
            "RINGPRESS_NETNS_RANKS_PER_HOST": str(self.ranks_per_host),
            "RINGPRESS_NETNS_PLACEMENT": self.placement,
            "PYTHONUNBUFFERED": "1",
            **job_key_env(),
        }

    def next_port(self) -> int:
        """A MASTER_PORT no earlier launch in these (fresh) namespaces has used."""
        port = FIRST_PORT + PORT_STEP * (self._launches % 2000)
        self._launches += 1
        return port

    def run(self, rank: int, cmd: Sequence[str], **kw: Any) -> subprocess.CompletedProcess:
        """``subprocess.run`` of one command inside rank ``rank``'s namespace."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.exec_prefix(rank) + _python_argv(cmd), **kw)

    def launch(
        self,
        cmd: Sequence[str],
        env: dict[str, str] | None = None,
        *,
        timeout: float | None = None,
        stream: bool | str = True,
        master_port: int | None = None,
        grace: float = KILL_GRACE_S,
    ) -> LaunchResult:
        """Run ``cmd`` once per rank, each inside its namespace; wait for all of them.

        ``env`` is added to this process's environment, then the rank variables (see
        ``rank_env``) on top. ``stream``: True streams rank 0's stdout / stderr to ours as it
        comes, "all" streams every rank's with a ``[rank r]`` prefix, "inherit" hands rank 0 our
        own stdout / stderr (not captured then), False streams nothing; all other output is
        captured in the result. If a rank exits non-zero, or ``timeout``
        seconds pass, the other ranks are stopped (SIGTERM, SIGKILL after ``grace``).
        """
        if not self._active:
            raise NetnsError("Topology is not set up (use it as a context manager)")
        port = master_port if master_port is not None else self.next_port()
        argv = _python_argv(cmd)
        envs = []
        for r in range(self.nranks):
            e = dict(os.environ)
            e.update(env or {})
            e.update(self.rank_env(r, port))
            envs.append(e)
        res = run_processes(
            [self.exec_prefix(r) + argv for r in range(self.nranks)],
            envs,
            timeout=timeout,
            stream=stream,
            grace=grace,
            track=self._procs,
            started=self._pids,
            master_port=port,
        )
        remove_shm_segments(res.pids)
        return res


def _atexit_teardown() -> None:
    with _live_lock:
        live = list(_live)
    for topo in live:
        with contextlib.suppress(Exception):
            topo.teardown()


atexit.register(_atexit_teardown)


@contextlib.contextmanager
def topology(nranks: int, rate: str | None = "1gbit", **kw: Any) -> Iterator[Topology]:
    """Function form of ``with Topology(nranks, rate) as topo``."""
    with Topology(nranks, rate, **kw) as topo:
        yield topo


# --------------------------------------------------------------------------- throughput check


def _probe_main(seconds: float, sender: int = 1) -> int:
    """One end of the throughput check; role by RANK: rank 0 receives, rank ``sender`` sends, the
    others have nothing to do."""
    rank = int(os.environ["RANK"])
    if rank not in (0, sender):
        return 0
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    chunk = 1 << 20
    if rank == 0:
        with socket.create_server((addr, port)) as srv:
            srv.settimeout(30)
            conn, _ = srv.accept()
        with conn:
            buf = bytearray(chunk)
            total = 0
            first = last = 0.0
            while True:
                n = conn.recv_into(buf)
                if n == 0:
                    break
                last = time.perf_counter()
                if total == 0:
                    first = last
                total += n
        secs = last - first
        print(
            json.dumps(
                {
                    "bytes": total,
                    "seconds": secs,
                    "gbps": total * 8 / secs / 1e9 if secs > 0 else 0.0,
                }
            )
        )
        return 0
    conn = connect_with_retry(addr, port, time.monotonic() + 20, pause=0.02)
    payload = memoryview(bytes(chunk))
    with conn:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            conn.sendall(payload)
    return 0


def measure_throughput(topo: Topology, seconds: float = 0.5, timeout: float = 60) -> dict[str, Any]:
    """TCP throughput into rank 0's host from the first rank on another host, over ``seconds``
    (bytes counted at the receiver).

    Returns {"bytes", "seconds", "gbps", "sender"}; raises NetnsError if the probe fails.
    """
    if topo.nhosts < 2:
        raise NetnsError("the throughput check needs at least 2 hosts")
    sender = next(r for r in range(topo.nranks) if topo.host_of(r) != topo.host_of(0))
    cmd = [sys.executable, "-m", __package__, "netns", "--_probe", str(seconds)]
    cmd += ["--_probe-sender", str(sender)]
    res = topo.launch(cmd, timeout=timeout, stream=False)
    if not res.ok:
        raise NetnsError("throughput check failed:\n" + res.describe())
    line = [ln for ln in res.stdout[0].splitlines() if ln.startswith("{")][-1]
    return {**json.loads(line), "sender": sender}


# --------------------------------------------------------------------------- reaper


def remove_topology(prefix: str) -> list[str]:
    """Remove every namespace (and /etc/netns entry) named ``<prefix>-*``, killing what runs in
    them and deleting shared-memory segments those processes left; returns the names removed."""
    names = set(list_namespaces())
    if os.path.isdir(NETNS_ETC):
        names |= set(os.listdir(NETNS_ETC))
    mine = sorted(n for n in names if n.startswith(prefix + "-"))
    pids = [p for n in mine for p in namespace_pids(n)]
    for name in mine:
        _delete_namespace(name)
    remove_shm_segments(pids)
    _remove_netns_etc_if_empty()
    return mine


def _reaper_main() -> None:
    """The watchdog of one Topology (``Topology._start_reaper``): wait for end of file on stdin
    (the topology's process closed it at teardown, or died, even by SIGKILL), then remove
    whatever of ``sys.argv[1]`` is left. Ignores the terminal's signals meanwhile."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    prefix = sys.argv[1]
    if not _NAME_RE.match(prefix + "-0"):
        raise SystemExit(f"reaper: refusing prefix {prefix!r}")  # only ever our own names
    if os.fork() != 0:
        os._exit(0)  # the first process: Topology waits for it; the second watches
    with contextlib.suppress(OSError):
        while sys.stdin.buffer.read(4096):
            pass
    remove_topology(prefix)


# --------------------------------------------------------------------------- CLI


def layout(
    nranks: int | None, hosts: int | None, ranks_per_host: int | None, default_nranks: int = 2
) -> tuple[int, int]:
    """(ranks, ranks per host) from the options ``--nranks``, ``--hosts``, ``--ranks-per-host``
    (any may be None): hosts x ranks-per-host ranks, or --nranks of them spread over hosts of
    --ranks-per-host (the last host may have fewer). Raises ValueError when they disagree."""
    rph = 1 if ranks_per_host is None else ranks_per_host
    if rph < 1 or (hosts is not None and hosts < 1) or (nranks is not None and nranks < 1):
        raise ValueError("--nranks, --hosts and --ranks-per-host must be positive")
    if hosts is None:
        n = nranks if nranks is not None else default_nranks * (rph if ranks_per_host else 1)
        return n, rph
    if nranks is None:
        return hosts * rph, rph
    if -(-nranks // rph) != hosts:
        raise ValueError(
            f"--nranks {nranks} does not fill --hosts {hosts} with --ranks-per-host {rph}"
        )
    return nranks, rph


def _parse(argv: list[str], prog: str) -> tuple[argparse.Namespace, list[str]]:
    cmd: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, cmd = argv[:i], argv[i + 1 :]
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Run one process per rank in network namespaces joined by shaped links.",
        epilog=f"example: {prog} --nranks 2 --rate 1gbit -- "
        "python -m ringpress_bench allreduce --quick",
    )
    ap.add_argument(
        "--nranks",
        "-n",
        type=int,
        default=None,
        help="ranks (default: hosts x ranks-per-host, else 2)",
    )
    ap.add_argument(
        "--hosts", type=int, default=None, help="hosts (namespaces); default: one per rank"
    )
    ap.add_argument(
        "--ranks-per-host",
        type=int,
        default=None,
        help="ranks sharing each host's namespace (shared memory among them); default 1",
    )
    ap.add_argument(
        "--placement",
        choices=PLACEMENTS,
        default="block",
        help="block (default): rank r on host r // ranks-per-host; cyclic: on host r %% hosts",
    )
    ap.add_argument(
        "--rate",
        default="1gbit",
        help="each host's link rate, both directions: 1gbit, 10gbit, none, ...",
    )
    ap.add_argument(
        "--mtu", type=int, default=None, help="link MTU (default: the veth default, 1500)"
    )
    ap.add_argument("--timeout", type=float, default=None, help="kill all ranks after S seconds")
    ap.add_argument(
        "--all-output", action="store_true", help="stream every rank's output, not only rank 0's"
    )
    ap.add_argument(
        "--check", action="store_true", help="measure TCP throughput across the link and exit"
    )
    ap.add_argument(
        "--seconds", type=float, default=1.0, help="--check transfer duration (default 1 s)"
    )
    ap.add_argument(
        "--cleanup", action="store_true", help="remove namespaces left by dead runs and exit"
    )
    ap.add_argument("--_probe", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_probe-sender", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        args.nranks, args.ranks_per_host = layout(args.nranks, args.hosts, args.ranks_per_host)
    except ValueError as e:
        ap.error(str(e))
    if args._probe is None and not (args.check or args.cleanup) and not cmd:
        ap.error("give a command after '--', or --check / --cleanup")
    return args, cmd


def main(argv: list[str] | None = None, prog: str = "ringpress bench netns") -> int:
    args, cmd = _parse(list(sys.argv[1:] if argv is None else argv), prog)
    if args._probe is not None:
        return _probe_main(args._probe, args._probe_sender)
    try:
        preflight(need_tc=parse_rate(args.rate) is not None)
        if args.cleanup:
            removed = cleanup_stale()
            print(f"removed {len(removed)} namespace(s)")
            return 0
        if args.check:
            nranks = max(args.nranks, args.ranks_per_host + 1)  # two hosts at least
            with Topology(
                nranks, args.rate, ranks_per_host=args.ranks_per_host, mtu=args.mtu
            ) as topo:
                r = measure_throughput(topo, args.seconds)
            burst = tbf_burst(topo.rate_bps) if topo.rate_bps else None
            shaping = (
                f"tbf rate {topo.rate} burst {burst} latency {TBF_LATENCY_MS}ms"
                if burst
                else "unshaped"
            )
            print(
                f"{r['gbps']:.3f} Gbit/s  ({r['bytes'] / 1e6:.1f} MB in {r['seconds']:.3f} s, "
                f"TCP {topo.ns(r['sender'])} -> {topo.ns(0)}, {shaping})"
            )
            return 0
        with Topology(
            args.nranks,
            args.rate,
            ranks_per_host=args.ranks_per_host,
            placement=args.placement,
            mtu=args.mtu,
        ) as topo:
            print(
                f"netns: {args.nranks} ranks on {topo.nhosts} hosts ({topo.placement}), "
                f"rate {topo.rate}, prefix {topo.prefix}, rank 0 at {topo.addr(0)}",
                file=sys.stderr,
                flush=True,
            )
            res = topo.launch(cmd, timeout=args.timeout, stream="all" if args.all_output else True)
        if res.ok:
            return 0
        print("netns: " + res.describe().replace("\n", "\nnetns: "), file=sys.stderr)
        return res.exit_code()
    except NetnsError as e:
        print(f"netns: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"netns: interrupted by {signal.Signals(e.signum).name}; cleaned up", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("netns: interrupted; cleaned up", file=sys.stderr)
        return 130
