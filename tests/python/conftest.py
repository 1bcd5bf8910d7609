import os
import sys

# Tests import the installed package, never the source tree (python/ has no _core).
here = os.path.dirname(os.path.abspath(__file__))
src_pkg = os.path.join(os.path.dirname(os.path.dirname(here)), "python")
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != src_pkg]

# The benchmarks' gradient cache (ringpress_bench.gradients) trains a small model once per
# checkout; the tests need its gradients, not a well-trained model: 40 warm-up steps instead of
# 300 (a separate cache file). Rank subprocesses inherit it.
os.environ.setdefault("RINGPRESS_BENCH_TRAIN_STEPS", "40")
