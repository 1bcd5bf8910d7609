"""`ringpress bench` end to end at small sizes with 2 ranks: alone (it spawns its ranks), under
mpirun, over a shaped link in namespaces; the JSON record's fields and values; bad arguments,
missing peers and bad `train` modes give a message and exit 2 (never a traceback); Ctrl-C leaves
no rank process, namespace or shared-memory segment behind. Also the packaging: the runtime finds
the benchmarks (a package of their own, ``ringpress_bench``) only through its ``ringpress.cli``
entry points, holds no benchmark code, and the benchmark modules import each other without a
cycle."""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from watch import Watched, alive, children

pytest.importorskip("ringpress_bench")
from ringpress_bench import launch, netns, runner
from ringpress_bench._common import Progress

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RINGPRESS = shutil.which("ringpress", path=str(BIN)) or shutil.which("ringpress")
MPIRUN = shutil.which("mpirun", path=str(BIN)) or shutil.which("mpirun")
HAVE_NETNS = (
    sys.platform == "linux"
    and os.geteuid() == 0
    and shutil.which("ip") is not None
    and shutil.which("tc") is not None
)
needs_netns = pytest.mark.skipif(not HAVE_NETNS, reason="needs root, Linux and iproute2 (ip, tc)")
QUICK_SIZES = [4096, 65536, 1 << 20]


def _have(mod: str) -> bool:
    try:
        __import__(mod)
    except ImportError:
        return False
    return True


def _bench(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: float = 120):
    """Run the console script (``python -m ringpress_bench`` where it is not installed)."""
    head = [RINGPRESS, "bench"] if RINGPRESS else [sys.executable, "-m", "ringpress_bench"]
    e = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    e.update(env or {})
    return subprocess.run(
        [*head, *args], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout
    )


def _no_traceback(res: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in res.stdout + res.stderr, res.stdout + res.stderr


def _check_record(rec: dict, world: int, sizes: list[int], repeats: int) -> None:
    """Fields every allreduce record has, and values computed the way the docstring says."""
    assert rec["benchmark"] == "bench.allreduce"
    assert rec["machine"]["cpu_count"] >= 1 and rec["machine"]["python"]
    v = rec["versions"]
    assert v["ringpress"] and v["numpy"] and v["python"]
    cfg = rec["config"]
    assert cfg["world_size"] == world and cfg["sizes"] == sizes
    assert cfg["busbw_factor"] == pytest.approx(2 * (world - 1) / world)
    assert "ringpress bench allreduce" in rec["command"] or "ringpress_bench" in rec["command"]
    assert [s["nbytes"] for s in rec["sizes"]] == sizes
    for s in rec["sizes"]:
        for name in cfg["peers_run"]:
            r = s["peers"][name]
            assert r["verified"] is True
            assert len(r["samples_s"]) == r["n_samples"] == repeats
            assert len(r["rank_samples_s"]) == world
            assert all(len(rs) == repeats and all(t > 0 for t in rs) for rs in r["rank_samples_s"])
            # a sample is the slowest rank's time; the reported time their median
            assert r["samples_s"] == [max(col) for col in zip(*r["rank_samples_s"], strict=False)]
            assert r["median_s"] == pytest.approx(statistics.median(r["samples_s"]))
            assert r["min_s"] == min(r["samples_s"]) > 0
            algbw = s["nbytes"] / r["median_s"] / 1e9
            assert r["algbw_GBps"] == pytest.approx(algbw)
            assert r["busbw_GBps"] == pytest.approx(algbw * 2 * (world - 1) / world)
        if "ringpress" in cfg["peers_run"]:
            rp = s["peers"]["ringpress"]["median_s"]
            for name, ratio in s["speedup_vs"].items():
                assert ratio == pytest.approx(s["peers"][name]["median_s"] / rp)


# --------------------------------------------------------------------------- runs


def test_alone_mode_spawns_two_ranks_and_records_everything(tmp_path):
    """No launcher, no --json: ranks spawned by the command, files in ./ringpress-results/."""
    res = _bench("allreduce", "--quick", "--nranks", "2", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    _no_traceback(res)
    assert "1 MiB" in res.stdout and "busbw" in res.stdout  # rank 0's table reached us
    assert "mpi: skipped, not launched under mpirun" in res.stdout
    out = tmp_path / "ringpress-results" / "allreduce_alone_np2_quick.json"
    assert f"wrote {out.relative_to(tmp_path)}" in res.stdout
    rec = json.loads(out.read_text())
    cfg = rec["config"]
    assert cfg["mode"] == "alone" and cfg["launcher"] == "env" and cfg["link"] is None
    assert cfg["quick"] is True and cfg["repeats"] == 3
    assert cfg["peers_requested"] == ["ringpress", "gloo", "mpi"]
    want = ["ringpress", "gloo"] if _have("torch") else ["ringpress"]
    assert cfg["peers_run"] == want
    assert any(n.startswith("mpi: skipped") for n in rec["notes"])
    assert rec["peers"]["ringpress"]["transport"] == ["shm"]
    _check_record(rec, 2, QUICK_SIZES, 3)
    assert rec["sizes"][0]["peers"]["ringpress"]["inner"] > 1  # back-to-back unless --isolated
    if _have("matplotlib"):
        assert out.with_suffix(".png").stat().st_size > 0
    if _have("torch"):
        assert set(rec["sizes"][0]["speedup_vs"]) == {"gloo"}


def test_the_single_copy_ways_learned_are_printed_and_recorded(tmp_path):
    # 3 MiB and 8 samples: the verification, the warm-up and the samples make 10 calls, enough
    # for RINGPRESS_SHM_SINGLE_COPY=auto to settle the 2.5-5 MiB class.
    out = tmp_path / "sc.json"
    argv = ["--nranks", "2", "--sizes", "3M", "--repeats", "8", "--warmup", "1"]
    res = _bench("allreduce", *argv, "--peers", "ringpress", "--json", str(out), "--no-plot")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ringpress: shm single copy learned (rank 0's view): allreduce 2.5 MiB-5 MiB: " in (
        res.stdout
    ), res.stdout
    (c,) = json.loads(out.read_text())["peers"]["ringpress"]["single_copy"]
    assert (c["op"], c["bytes"]) == ("allreduce", 5 << 19)
    assert ("by reference" if c["by_reference"] else "ring") in res.stdout


@pytest.mark.skipif(MPIRUN is None, reason="mpirun not installed")
def test_under_mpirun(tmp_path):
    pytest.importorskip("mpi4py")
    out = tmp_path / "mpi.json"
    cmd = [MPIRUN, "-n", "2", "--allow-run-as-root", "--oversubscribe", sys.executable]
    cmd += ["-m", "ringpress_bench", "allreduce", "--quick", "--peers", "ringpress,mpi"]
    res = subprocess.run(
        [*cmd, "--json", str(out), "--no-plot", "--sizes", "4K,64K"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    _no_traceback(res)
    assert res.stdout.count("64 KiB") == 1  # only rank 0 prints
    rec = json.loads(out.read_text())
    assert rec["config"]["mode"] == "mpi" and rec["config"]["peers_run"] == ["ringpress", "mpi"]
    assert "Open MPI" in rec["versions"]["mpi_library"]
    _check_record(rec, 2, [4096, 65536], 3)


@pytest.mark.skipif(MPIRUN is None, reason="mpirun not installed")
def test_under_mpirun_without_mpi4py_is_a_message(tmp_path):
    shim = _shim(tmp_path, "mpi4py")
    cmd = [MPIRUN, "-n", "2", "--allow-run-as-root", "--oversubscribe", "-x", "PYTHONPATH"]
    cmd += [sys.executable, "-m", "ringpress_bench", "allreduce", "--quick"]
    res = subprocess.run(
        cmd,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(shim)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0
    assert "mpi4py is not importable" in res.stderr and "pip install 'ringpress[mpi]'" in res.stderr
    _no_traceback(res)


@needs_netns
def test_shaped_link_in_namespaces(tmp_path):
    out = tmp_path / "link.json"
    args = ["allreduce", "--link", "1gbit", "--quick", "--sizes", "4K,64K", "--peers"]
    res = _bench(*args, "ringpress", "--json", str(out), "--no-plot")
    assert res.returncode == 0, res.stdout + res.stderr
    _no_traceback(res)
    rec = json.loads(out.read_text())
    cfg = rec["config"]
    assert cfg["link"] == "1gbit" and cfg["network"]["rate"] == "1gbit"
    assert cfg["network"]["transport"] == "tcp" and cfg["mode"] == "alone"
    assert rec["peers"]["ringpress"]["transport"] == ["tcp"]
    assert "--link 1gbit" in rec["command"]
    _check_record(rec, 2, [4096, 65536], 3)
    # 64 KiB cannot cross a 1 Gbit/s link faster than the link (busbw = algbw for 2 ranks)
    assert rec["sizes"][1]["peers"]["ringpress"]["busbw_GBps"] < 0.2
    assert not [n for n in netns.list_namespaces() if n.startswith(netns.PREFIX)]


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root + setpriv"
)
def test_link_without_root_is_one_clear_line():
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
    cmd += ["-m", "ringpress_bench", "allreduce", "--link", "1gbit", "--quick"]
    res = subprocess.run(cmd, cwd="/", capture_output=True, text=True, timeout=30)
    if "No module named" in res.stderr or "Permission denied" in res.stderr:
        pytest.skip("the interpreter or the installed package is not readable by nobody")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "--link 1gbit" in res.stderr and "need root" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    _no_traceback(res)


# --------------------------------------------------------------------------- missing peers


def _shim(tmp_path: Path, *modules: str) -> Path:
    """A PYTHONPATH entry where importing ``modules`` fails, as if they were not installed."""
    d = tmp_path / "shim"
    for m in modules:
        (d / m).mkdir(parents=True, exist_ok=True)
        (d / m / "__init__.py").write_text(f"raise ImportError('{m} hidden by a test shim')\n")
    return d


def test_missing_torch_and_mpi_skip_their_peers(tmp_path):
    out = tmp_path / "shim.json"
    env = {"PYTHONPATH": str(_shim(tmp_path, "torch", "mpi4py"))}
    res = _bench("allreduce", "--quick", "--sizes", "4K", "--json", str(out), "--no-plot", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    _no_traceback(res)
    assert "gloo: skipped, torch.distributed not importable" in res.stdout
    assert "mpi: skipped" in res.stdout
    rec = json.loads(out.read_text())
    assert rec["config"]["peers_run"] == ["ringpress"]
    assert rec["versions"]["torch"] is None and rec["versions"]["mpi4py"] is None
    assert len(rec["notes"]) == 2
    _check_record(rec, 2, [4096], 3)


def test_isolated_times_one_call_per_sample(tmp_path):
    """--isolated: every sample is the barrier and one call (inner 1), in its own JSON file."""
    res = _bench(
        "allreduce", "--isolated", "--quick", "--sizes", "4K,64K", "--peers", "ringpress",
        "--no-plot", cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    _no_traceback(res)
    assert "one call after a barrier per sample" in res.stdout
    rec = json.loads(
        (tmp_path / "ringpress-results" / "allreduce_alone_np2_isolated_quick.json").read_text()
    )
    assert rec["config"]["isolated"] is True
    assert all(s["peers"]["ringpress"]["inner"] == 1 for s in rec["sizes"])
    _check_record(rec, 2, [4096, 65536], 3)


# --------------------------------------------------------------------------- usage


def _main(argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = runner.main(argv)
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "give a subcommand"),
        (["nccl"], "invalid choice"),
        (["allreduce", "--sizes", "3"], "multiples of 4 bytes"),
        (["allreduce", "--sizes", "lots"], "bad size 'lots'"),
        (["allreduce", "--peers", "nccl"], "unknown peers ['nccl']"),
        (["allreduce", "--peers", "mpi"], "the mpi peer needs mpirun"),
        (["allreduce", "--link", "fast"], "bad rate 'fast'"),
        (["allreduce", "--nranks", "0"], "--nranks must be between 1 and 250"),
        (["allreduce", "--launcher", "single", "--nranks", "2"], "--nranks is for alone mode"),
        (["allreduce", "--repeats", "0"], "must be positive"),
        (["allreduce", "--bogus"], "unrecognized arguments: --bogus"),
        (["codecs", "--sizes", "1M,2M"], "takes one size"),
        (["codecs", "--datasets", "fp64"], "unknown datasets"),
        (["compressors", "--size-mib", "-1"], "must be positive"),
        (["kernels", "--repeats", "0"], "must be positive"),
        (["train", "--link", "fast"], "bad rate 'fast'"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys, monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    rc, err = _main(argv, capsys)
    assert rc == 2, err
    assert message in err and "error:" in err and "Traceback" not in err


def test_bad_arguments_from_the_shell():
    res = _bench("allreduce", "--sizes", "4K..1K")
    assert res.returncode == 2 and "bad size range" in res.stderr and "usage:" in res.stderr
    _no_traceback(res)


def test_train_is_wired_up():  # its own tests: test_bench_train.py
    res = _bench("train", "--modes", "bogus")
    assert res.returncode == 2 and "unknown mode 'bogus'" in res.stderr
    _no_traceback(res)


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        runner.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for sub in runner.SUBCOMMANDS:
        assert f"  {sub} " in text


# --------------------------------------------------------------------------- interrupt


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_ctrl_c_leaves_nothing_behind(tmp_path):
    """SIGINT while both ranks are inside 256 MiB allreduces (in namespaces when root).

    Ready = rank 0's table header (it prints it once both ranks have set up every peer, torch
    imported and gloo joined: seconds here, minutes on a machine other jobs load, hence the wait
    for the line rather than a fixed deadline). Both pipes are read as the output comes: rank 0
    writes to the command's own stderr, and a full pipe would block it."""
    args = ["allreduce", "--nranks", "2", "--sizes", "256M", "--json", str(tmp_path / "x.json")]
    if HAVE_NETNS:
        args += ["--link", "1gbit"]
    head = [RINGPRESS, "bench"] if RINGPRESS else [sys.executable, "-m", "ringpress_bench"]
    cmd = Watched(
        subprocess.Popen(
            [*head, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    )
    proc = cmd.proc
    ready = cmd.wait_for(lambda: "busbw" in cmd.out)  # the table header: both ranks measure now
    time.sleep(1.0)  # into the first 256 MiB allreduce (an interrupt must clean up at any point)
    ranks = children(proc.pid)
    prefix = f"{netns.PREFIX}{proc.pid}_"
    try:
        assert ready, f"the benchmark never started measuring:\n{cmd.out}\n{cmd.err}"
        assert len(ranks) == 2, ranks
        if HAVE_NETNS:
            assert len([n for n in netns.list_namespaces() if n.startswith(prefix)]) == 2
    finally:
        proc.send_signal(signal.SIGINT)
        rc = cmd.wait_exit()
    err = cmd.err
    assert rc == 130, err
    assert "interrupted by SIGINT; ranks stopped" in err and "Traceback" not in err
    for pid in ranks:
        assert not alive(pid), f"rank process {pid} survived"
    assert not [n for n in netns.list_namespaces() if n.startswith(prefix)]
    leftovers = [p for pid in ranks for p in Path("/dev/shm").glob(f"ringpress-*-{pid}-*")]
    assert leftovers == []
    assert not (tmp_path / "x.json").exists()  # an interrupted run records nothing


# --------------------------------------------------------------------------- pieces


def test_shm_segments_of_dead_ranks_are_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    seg = Path(launch.SHM_DIR) / f"ringpress-testjob-{dead.pid}-0-1"
    other = Path(launch.SHM_DIR) / f"ringpress-testjob-{dead.pid}7-0-1"  # another pid: kept
    seg.write_bytes(b"x")
    other.write_bytes(b"x")
    try:
        assert launch.remove_shm_segments([dead.pid]) == [str(seg)]
        assert not seg.exists() and other.exists()
    finally:
        for p in (seg, other):
            p.unlink(missing_ok=True)


def test_progress_bar(capsys):
    bar = Progress(4, enabled=True, label="x ")
    bar.start("4 KiB ringpress")
    bar.step()
    bar.write("a table row")
    bar.step(3)
    bar.close()
    cap = capsys.readouterr()
    assert cap.out == "a table row\n"
    assert "[######..................] 1/4  4 KiB ringpress" in cap.err
    assert "[########################] 4/4" in cap.err
    assert cap.err.endswith("\r")  # closed: the line is blank again
    off = Progress(4, enabled=False)
    off.step()
    off.write("row")
    assert capsys.readouterr().err == ""
    assert Progress.wanted(True) and not Progress.wanted(False) and not Progress.wanted(True, False)


def test_where_results_and_caches_go(tmp_path, monkeypatch):
    from ringpress_bench import _common

    for k in ("RINGPRESS_BENCH_RESULTS", "RINGPRESS_CACHE_DIR"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.chdir(ROOT / "tests")  # inside a checkout: its bench/ folders
    assert _common.results_dir() == ROOT / "bench" / "results"
    assert _common.cache_dir() == ROOT / "bench" / ".cache"
    monkeypatch.chdir(tmp_path)  # anywhere else: ./ringpress-results, the user's cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _common.results_dir() == Path("ringpress-results")
    assert _common.cache_dir() == tmp_path / "xdg" / "ringpress"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _common.cache_dir() == tmp_path / "home" / ".cache" / "ringpress"


# --------------------------------------------------------------------------- packaging

BENCH_DIR = Path(runner.__file__).resolve().parent


def test_the_runtime_finds_the_benchmarks_through_entry_points():
    from ringpress import __main__ as cli

    found = cli.plugins()
    assert found["bench"].value == "ringpress_bench.runner:main"
    assert found["kernels"].value == "ringpress_bench.runner:kernels_main"
    assert found["bench"].load() is runner.main
    res = subprocess.run(
        [sys.executable, "-m", "ringpress", "--help"], capture_output=True, text=True, timeout=60
    )
    out = " ".join(res.stdout.split())  # argparse wraps the help lines
    assert "{info,bench,kernels}" in out and "allreduce (gloo, Open MPI)" in out


def test_without_the_benchmarks_ringpress_bench_says_how_to_install(monkeypatch, capsys):
    from ringpress import __main__ as cli

    monkeypatch.setattr(cli, "plugins", dict)  # as if ringpress-bench were not installed
    for name in ("bench", "kernels"):
        assert cli.main([name, "allreduce"]) == 2
        err = capsys.readouterr().err
        assert f"ringpress {name}: not installed here" in err and "pip install ./bench" in err
    assert cli.main(["info", "--json"]) == 0  # the runtime's own commands still work
    assert json.loads(capsys.readouterr().out)["version"]


def test_the_runtime_package_holds_no_benchmark_code():
    import ringpress

    pkg = Path(ringpress.__file__).resolve().parent
    modules = {p.relative_to(pkg).as_posix() for p in pkg.rglob("*.py")}
    assert not [m for m in modules if m.startswith("bench/") or m == "kernels.py"], modules
    assert not [m for m in modules if "ringpress_bench" in (pkg / m).read_text()], modules
    bench = {p.stem for p in BENCH_DIR.glob("*.py")} - {"__init__", "__main__"}
    assert not bench & {p.stem for p in pkg.rglob("*.py")}  # no module name in both packages


def _package_imports(path: Path) -> set[str]:
    """Modules of ``ringpress_bench`` that ``path`` imports (anywhere in it, functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 1 and not mod:  # from . import a, b
                names |= {a.name for a in node.names}
            elif node.level == 1 or mod.startswith("ringpress_bench."):
                names.add(mod.split(".")[-1] if node.level == 0 else mod.split(".")[0])
        elif isinstance(node, ast.Import):
            names |= {
                a.name.split(".")[1] for a in node.names if a.name.startswith("ringpress_bench.")
            }
    return names - {path.stem}


def test_benchmark_modules_import_each_other_without_a_cycle():
    graph = {p.stem: _package_imports(p) for p in BENCH_DIR.glob("*.py")}
    assert graph["launch"] == set(), graph["launch"]  # processes: below netns and the runner
    assert graph["netns"] <= {"_common", "launch"}, graph["netns"]
    assert "runner" in graph["allreduce"] and "runner" in graph["train"]
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for dep in graph.get(name, ()):
            visit(dep, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())
