"""``ringpress bench``: ringpress against its peers, side by side in one run; this module is the
runner every benchmark shares (argument parsing, starting ranks, turning failures into exit codes).

Subcommands
    allreduce (alias collectives)  ringpress vs gloo vs Open MPI allreduce over a size sweep; alone
                                   it starts its own ranks (--nranks, --link RATE in namespaces),
                                   or it runs as one rank under mpirun / torchrun
    codecs                         lossless codec vs blosc2 / zstandard / lz4 on real gradients
    compressors                    lossy gradient compressors vs torch / numpy
    compressed                     allreduce with each wire compression (and auto) vs gloo plain on
                                   real gradients; run as the ranks of a job, e.g. under
                                   'ringpress bench netns --rate 1gbit -- python -m ringpress_bench compressed'
    train                          DDP training step time, bytes sent and held-out loss per
                                   communication mode (gloo, fp16, PowerSGD, ringpress + hook);
                                   alone, under torchrun, or under 'ringpress bench netns'
    elastic                        training with a rank killed (SIGKILL) every N steps and
                                   restarted vs the same run undisturbed (ElasticDataParallel)
    horovod                        examples/horovod_mnist.py (ringpress.horovod.torch) vs the
                                   same training on DDP + gloo, step time; run as ranks, e.g.
                                   under 'ringpress bench netns --rate 1gbit -- python -m
                                   ringpress_bench horovod'
    netns                          the namespace harness itself (--check, --cleanup, -- CMD)
    kernels                        shuffle kernel speed per SIMD level vs numpy (also
                                   'ringpress kernels')
    gradients                      build the real-gradient cache the benchmarks use, print its stats

Every benchmark prints a table with the ratios, writes a JSON record (machine, versions, command,
configuration, every sample) and a PNG plot (skipped with a note without matplotlib) under
``bench/results/`` in a source checkout or ``./ringpress-results/`` elsewhere, and shows a progress
bar on stderr (rank 0, a terminal, unless --no-progress). A missing optional peer (torch, mpi4py,
blosc2, ...) is skipped with a one-line note.

What this module owns
    The command line: the subcommand table and dispatch (:func:`main`, registered in the
    ``ringpress.cli`` entry-point group as ``bench`` and ``kernels``, so the runtime's ``ringpress``
    command finds it without importing this package by name), :class:`ArgParser` (usage errors
    printed by rank 0 only), the options the benchmarks share (:func:`add_common_args`,
    :func:`add_run_args`, :func:`add_alone_args`).
    Starting ranks: alone mode (no launcher) starts ``--nranks`` copies of the benchmark
    (:func:`spawn_or_run`, :func:`spawn_alone`: local ranks from ``launch``, or ranks in network
    namespaces from ``netns`` with ``--link``) and tells them so through the environment
    (``MODE_ENV``, ``COMMAND_ENV``, ``PARENT_ENV``; a spawned rank dies with its parent).
    Exit codes (:func:`run_guarded`): 0 done; 1 a wrong result (:class:`BenchError`) or a ringpress
    error on a rank; 2 bad arguments or a missing requirement (:class:`UsageExit`, one message from
    rank 0); 124 alone mode's --timeout; 128+N stopped by signal N (130: Ctrl-C; every rank stopped,
    namespaces and shared memory removed). Never a traceback for any of these.

Layering (imports point down only): ``_common`` (timing, formatting, paths, progress) <- ``launch``
(processes, signals, shared memory) <- ``netns`` (namespaces) <- ``runner`` <- the benchmarks. The
runner names a benchmark module only as a string in :data:`SUBCOMMANDS`, imported when its
subcommand runs.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import launch, netns
from ._common import parse_sizes, results_dir

PROG = "ringpress bench"
SUBCOMMANDS = {  # name: (module, one line of help)
    "allreduce": ("allreduce", "ringpress vs gloo vs Open MPI allreduce, size sweep"),
    "collectives": (
        "collectives",
        "every collective + p2p: dist.* on ringpress vs gloo, and the raw Communicator",
    ),
    "codecs": ("lossless_codecs", "lossless codec vs blosc2 / zstandard / lz4 on real gradients"),
    "compressors": ("gradient_compressors", "gradient compressors vs torch / numpy peers"),
    "compressed": (
        "compressed_allreduce",
        "compressed allreduce modes vs gloo on real gradients (run as ranks)",
    ),
    "train": ("train", "DDP step time, bytes and held-out loss per compression mode"),
    "elastic": ("elastic_train", "training with ranks killed and restarted vs undisturbed"),
    "horovod": (
        "horovod_mnist",
        "the Horovod-style MNIST script on ringpress vs DDP + gloo (run as ranks)",
    ),
    "netns": ("netns", "namespace harness: --check, --cleanup, or -- CMD"),
    "kernels": ("shuffle_kernels", "shuffle kernel speed per SIMD level vs numpy"),
    "gradients": ("gradients", "build the real-gradient cache, print its statistics"),
}

PARENT_ENV = "RINGPRESS_BENCH_PARENT"  # pid of the command that spawned this rank
MODE_ENV = "RINGPRESS_BENCH_MODE"  # "alone" in ranks a benchmark command spawned itself
COMMAND_ENV = "RINGPRESS_BENCH_COMMAND"  # the spawning command line, for the record
DEFAULT_NRANKS = 2  # alone mode
QUICK_SIZE_MIB = 4.0
QUICK_REPEATS = 3


# --------------------------------------------------------------------------- failures


class UsageExit(Exception):
    """Cannot run as asked (bad input, a missing requirement); the message says what to do.
    Exit code 2, printed by rank 0 only."""


class BenchError(RuntimeError):
    """A peer gave a wrong result, or the ranks disagree; the message says which. Exit code 1."""


def run_guarded(body: Callable[[], Any], prog: str) -> int:
    """Run a benchmark's ``body()`` and turn the ways it can fail into exit codes and one-line
    messages (see the module docstring); any other exception keeps its traceback."""
    rank = launcher_rank()
    try:
        return int(body() or 0)
    except UsageExit as e:
        if rank == 0:
            print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
        let_rank0_speak()
        return 2
    except BenchError as e:
        print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        if rank == 0:
            print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # | head
        return 0
    except Exception as e:
        from ringpress.errors import RingpressError

        if not isinstance(e, RingpressError):
            raise
        print(f"{prog}: rank {rank}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1


# --------------------------------------------------------------------------- ranks


def launcher_rank() -> int:
    """This process's rank as a launcher's environment tells it (0 if none does)."""
    for key in ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "RANK"):
        v = os.environ.get(key, "")
        if v.isdigit():
            return int(v)
    return 0


def let_rank0_speak(seconds: float = 3.0) -> None:
    """On a rank other than 0 that is about to fail with the message rank 0 prints: wait a moment
    first, since mpirun kills the whole job when the first rank exits non-zero, which could be
    before rank 0 has printed anything."""
    if launcher_rank() != 0:
        time.sleep(seconds)


def die_with_parent() -> None:
    """In a rank that ``ringpress bench`` spawned: ask Linux for SIGTERM when that command dies,
    so even a SIGKILLed command leaves no rank running (Linux only; a no-op elsewhere)."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError, ValueError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 15, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGTERM
        if os.getppid() != int(parent):  # it died before prctl took effect
            os.kill(os.getpid(), 15)


def self_command(subcommand: str) -> list[str]:
    """The argv that runs ``subcommand`` of this package in another process (same interpreter)."""
    return [sys.executable, "-m", __package__, subcommand]


def spawn_alone(
    subcommand: str,
    rank_argv: Sequence[str],
    argv: Sequence[str],
    nranks: int,
    link: str | None,
    timeout: float | None,
    prog: str,
    ranks_per_host: int = 1,
    placement: str = "block",
) -> int:
    """Alone mode of a benchmark (``prog argv``): start ``nranks`` copies of ``subcommand
    rank_argv`` on this host (or each in a network namespace joined by a link shaped to ``link``),
    rank 0 on our terminal; stop them all on failure, timeout or a signal (namespaces removed);
    ``ranks_per_host`` ranks share a namespace host (``placement``: netns.Topology). The
    ranks get MODE_ENV = "alone", COMMAND_ENV = the command line, PARENT_ENV = our pid. Returns the
    exit code to use."""
    cmd = [*self_command(subcommand), *rank_argv]
    env = {
        MODE_ENV: "alone",
        COMMAND_ENV: shlex.join([*prog.split(), *argv]),
        PARENT_ENV: str(os.getpid()),
    }
    if link is not None:
        try:
            netns.preflight(need_tc=netns.parse_rate(link) is not None)
        except netns.NetnsError as e:
            print(f"{prog}: error: --link {link}: {e}", file=sys.stderr)
            return 2
        harness: Any = netns.Topology(
            nranks, link, ranks_per_host=ranks_per_host, placement=placement
        )
        where = (
            f"each in a network namespace, link {harness.rate}"
            if ranks_per_host == 1
            else f"on {harness.nhosts} namespace hosts ({placement}), link {harness.rate}"
        )
    else:
        harness = launch.LocalRanks(nranks)
        where = "on this host"
    print(f"{prog}: starting {nranks} ranks {where} (alone mode)", file=sys.stderr, flush=True)
    try:
        with harness as ranks:
            res = ranks.launch(cmd, env=env, stream="inherit", timeout=timeout)
    except netns.NetnsError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(
            f"\n{prog}: interrupted by {signal.Signals(signum).name}; ranks stopped"
            + (", namespaces removed" if link is not None else ""),
            file=sys.stderr,
        )
        return 128 + signum
    if not res.ok:
        detail = res.describe().replace("\n", f"\n{prog}: ")
        print(f"{prog}: ranks failed: {detail}", file=sys.stderr)
    return res.exit_code()


def spawn_or_run(
    args: argparse.Namespace,
    argv: Sequence[str],
    prog: str,
    subcommand: str,
    rank_argv: Callable[[], Sequence[str]],
    run_rank: Callable[[argparse.Namespace], Any],
) -> int:
    """The main of a benchmark whose ranks are processes: alone (``args.alone``: no launcher)
    start ``args.nranks`` ranks running ``subcommand rank_argv()`` and wait for them; otherwise
    this process is one rank: ``run_rank(args)``."""
    if args.alone:
        hosts, rph = getattr(args, "hosts", None), getattr(args, "ranks_per_host", None)
        try:
            n, per_host = netns.layout(args.nranks, hosts, rph, DEFAULT_NRANKS)
        except ValueError as e:
            raise UsageExit(str(e)) from None
        link = args.link
        if link is None and (hosts is not None or rph is not None):
            link = "none"  # hosts are namespaces: unshaped links unless --link says
        placement = getattr(args, "placement", None) or "block"
        return spawn_alone(
            subcommand, rank_argv(), argv, n, link, args.timeout, prog, per_host, placement
        )
    die_with_parent()
    run_rank(args)
    return 0


# --------------------------------------------------------------------------- arguments


class ArgParser(argparse.ArgumentParser):
    """argparse that prints its usage errors on one rank only (under mpirun / torchrun every rank
    parses the same command line; one message is enough)."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        if launcher_rank() == 0:
            self.print_usage(sys.stderr)
            sys.stderr.write(f"{self.prog}: error: {message}\n")
        else:
            let_rank0_speak()
        raise SystemExit(2)


def rate_arg(text: str) -> str:
    """argparse type of ``--link``: a tc rate (1gbit, 10gbit, ...) or none, lower-cased."""
    try:
        netns.parse_rate(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text.strip().lower()


def add_alone_args(ap: argparse.ArgumentParser, what: str = "rank processes") -> None:
    """``--nranks``, ``--link`` and ``--timeout``: how alone mode starts the ranks."""
    ap.add_argument(
        "--nranks",
        "-n",
        type=int,
        default=None,
        help=f"alone mode: {what} to start (default {DEFAULT_NRANKS}); under a launcher the "
        "launcher decides",
    )
    ap.add_argument(
        "--link",
        type=rate_arg,
        default=None,
        metavar="RATE",
        help="alone mode, root only: run every rank in its own network namespace, joined by a "
        "veth link shaped to RATE (1gbit, 10gbit, none = unshaped veth, or any tc rate such "
        "as 2.5gbit); ringpress then uses TCP",
    )
    ap.add_argument(
        "--hosts",
        type=int,
        default=None,
        help="alone mode, root only: run the ranks on this many network-namespace hosts "
        "(links shaped to --link, unshaped without it); default: one per rank with --link",
    )
    ap.add_argument(
        "--ranks-per-host",
        type=int,
        default=None,
        help="alone mode, root only: ranks sharing each namespace host (shared memory among "
        "them, TCP between hosts); --nranks defaults to hosts x ranks-per-host",
    )
    ap.add_argument(
        "--placement",
        choices=("block", "cyclic"),
        default=None,
        help="with --hosts / --ranks-per-host: block (default, rank r on host r // L) or "
        "cyclic (rank r on host r %% hosts)",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="alone mode: stop every rank after this many seconds (exit 124)",
    )


def add_common_args(ap: argparse.ArgumentParser) -> None:
    """Output and progress options every benchmark shares."""
    ap.add_argument(
        "--json",
        type=Path,
        default=None,
        help=f"JSON record path (default: a name under {results_dir()}/, *_quick.json with --quick)",
    )
    ap.add_argument(
        "--plot",
        "--png",
        dest="png",
        type=Path,
        default=None,
        help="PNG plot path (default: next to --json)",
    )
    ap.add_argument("--no-plot", action="store_true", help="skip the PNG")
    bar = ap.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show the progress bar even when stderr is not a terminal (mpirun forwards "
        "output line by line: there the bar only shows at the end)",
    )
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def add_run_args(ap: argparse.ArgumentParser, name: str, size_help: str) -> None:
    """The options the single-process benchmarks share: data size, repeats, output files, heap
    tuning, progress, --quick. ``name``: the default JSON file's stem."""
    size = ap.add_mutually_exclusive_group()
    size.add_argument(
        "--size-mib",
        type=float,
        default=None,
        help=f"{size_help}; default 64, {QUICK_SIZE_MIB:g} with --quick",
    )
    size.add_argument(
        "--sizes",
        default=None,
        metavar="SIZE",
        help="the same as one size in bytes with a unit, e.g. 16M (one value)",
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed calls per measurement (median reported); default 7, "
        f"{QUICK_REPEATS} with --quick",
    )
    add_common_args(ap)
    ap.add_argument(
        "--no-heap-tuning",
        action="store_true",
        help="leave glibc malloc alone (fresh-buffer APIs then pay page faults per call)",
    )
    ap.add_argument("--quick", action="store_true", help="small sizes, 3 repeats (for tests)")
    ap.set_defaults(_json_name=name)


def finish_run_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Fill the --quick dependent defaults and reject bad values (argparse-style, exit 2)."""
    if args.sizes is not None:
        try:
            sizes = parse_sizes(args.sizes)
        except ValueError as e:
            ap.error(str(e))
        if len(sizes) != 1:
            ap.error(f"--sizes takes one size here, got {len(sizes)}")
        args.size_mib = sizes[0] / (1 << 20)
    if args.size_mib is None:
        args.size_mib = QUICK_SIZE_MIB if args.quick else 64.0
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else 7
    if args.json is None:
        args.json = results_dir() / f"{args._json_name}{'_quick' if args.quick else ''}.json"
    if args.png is None:
        args.png = args.json.with_suffix(".png")
    if args.repeats < 1 or args.size_mib <= 0 or getattr(args, "threads", 1) < 1:
        ap.error("--repeats, --threads and --size-mib must be positive")
    return args


# --------------------------------------------------------------------------- the command


def run_subcommand(name: str, argv: list[str], prog: str) -> int:
    """Import the module of subcommand ``name`` and run its ``main(argv, prog=prog)`` guarded."""
    module = importlib.import_module(f"{__package__}.{SUBCOMMANDS[name][0]}")
    return run_guarded(lambda: module.main(argv, prog=prog), prog)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """``ringpress bench SUBCOMMAND ...`` (entry point ``bench`` of the ``ringpress.cli`` group)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    listing = "\n".join(f"  {name:<12} {text}" for name, (_, text) in SUBCOMMANDS.items())
    ap = ArgParser(
        prog=prog,
        description="Benchmarks: ringpress against its peers, side by side in one run.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"subcommands:\n{listing}\n\n'{prog} SUBCOMMAND --help' lists its options. "
        f"examples:\n  {prog} allreduce --quick\n  mpirun -n 2 {prog} allreduce\n"
        f"  {prog} allreduce --link 1gbit --sizes 4K,1M,16M   (root)\n  {prog} codecs --repeats 5",
    )
    ap.add_argument("subcommand", choices=list(SUBCOMMANDS), metavar="SUBCOMMAND", help="see below")
    if argv[:1] in (["-h"], ["--help"]):
        ap.parse_args(argv[:1])  # prints the help, exits 0
    if not argv or argv[0].startswith("-"):
        ap.error(f"give a subcommand first: {', '.join(SUBCOMMANDS)}")
    sub = ap.parse_args(argv[:1]).subcommand
    return run_subcommand(sub, argv[1:], f"{prog} {sub}")


def kernels_main(argv: list[str] | None = None, prog: str = "ringpress kernels") -> int:
    """``ringpress kernels ...`` (entry point ``kernels`` of the ``ringpress.cli`` group): the same
    as ``ringpress bench kernels ...``."""
    return run_subcommand("kernels", list(sys.argv[1:] if argv is None else argv), prog)


main.help = (  # type: ignore[attr-defined]
    "benchmarks against the peers: allreduce (gloo, Open MPI), codecs (blosc2), "
    "compressors (torch), compressed, train, netns; 'ringpress bench --help'"
)
kernels_main.help = "shuffle kernel speed per SIMD level"  # type: ignore[attr-defined]
