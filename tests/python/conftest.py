import os
import sys

# Tests import the installed package, never the source tree (python/ has no _core).
here = os.path.dirname(os.path.abspath(__file__))
src_pkg = os.path.join(os.path.dirname(os.path.dirname(here)), "python")
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != src_pkg]
