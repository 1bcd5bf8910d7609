# ringpress developer entry points. The README's two commands are `make demo` and `make test`.
.PHONY: demo test setup build wheel format lint clean

VENV ?= .venv
export RP_VENV := $(VENV)

# The main job (grows with the project): a 2-rank allreduce under mpirun, ringpress against gloo
# and Open MPI in the same job (table + JSON + PNG in bench/results/), then the lossless codec
# against blosc2/zstandard/lz4 on real gradients (a char-LSTM trained on the stdlib source).
# Open MPI refuses root without these two variables; --oversubscribe only on a 1-core machine.
MPIRUN = OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 $(VENV)/bin/mpirun \
	$$( [ "$$(nproc)" -lt 2 ] && echo --oversubscribe )
demo: build
	$(VENV)/bin/python -m ringpress info
	$(MPIRUN) -n 2 $(VENV)/bin/python -m bench.allreduce
	$(VENV)/bin/python -m bench.codecs --repeats 5

test: build
	bash scripts/test.sh

setup:
	bash scripts/setup.sh

build: setup
	bash scripts/build.sh

wheel: setup
	bash scripts/check_wheel.sh

lint: setup
	$(VENV)/bin/ruff check python tests bench
	$(VENV)/bin/ruff format --check python tests bench

format: setup
	$(VENV)/bin/ruff format python tests bench
	find csrc tests/cpp -name '*.cc' -o -name '*.h' -o -name '*.cu' | xargs clang-format -i

clean:
	rm -rf build dist wheelhouse _skbuild
