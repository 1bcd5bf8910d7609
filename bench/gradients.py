"""Moved to ``ringpress.bench.gradients`` (installed with ringpress; ``ringpress bench --help``).

This module *is* that one (it replaces itself in ``sys.modules``), so ``import bench.gradients`` and
``python -m bench.gradients`` keep working in a source checkout.
"""

import sys

from ringpress.bench import gradients as _impl

if __name__ == "__main__":
    sys.exit(_impl.main(prog="python -m bench.gradients"))
else:
    sys.modules[__name__] = _impl
