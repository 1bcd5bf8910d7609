"""Moved to ``ringpress.bench.allreduce`` (installed with ringpress; ``ringpress bench --help``).

This module *is* that one (it replaces itself in ``sys.modules``), so ``import bench.allreduce`` and
``python -m bench.allreduce`` keep working in a source checkout.
"""

import sys

from ringpress.bench import allreduce as _impl

if __name__ == "__main__":
    sys.exit(_impl.main(prog="python -m bench.allreduce"))
else:
    sys.modules[__name__] = _impl
