"""Moved to ``ringpress.bench.compressors`` (installed with ringpress; ``ringpress bench --help``).

This module *is* that one (it replaces itself in ``sys.modules``), so ``import bench.compressors`` and
``python -m bench.compressors`` keep working in a source checkout.
"""

import sys

from ringpress.bench import compressors as _impl

if __name__ == "__main__":
    sys.exit(_impl.main(prog="python -m bench.compressors"))
else:
    sys.modules[__name__] = _impl
