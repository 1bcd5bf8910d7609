# ringpress developer entry points. The README's two commands are `make demo` and `make test`.
.PHONY: demo test setup build wheel format lint clean

VENV ?= .venv
export RP_VENV := $(VENV)

# The main job (grows with the project): `ringpress bench allreduce` under mpirun, 2 ranks,
# ringpress against gloo and Open MPI in the same job (table + JSON + PNG in bench/results/);
# then the lossless codec against blosc2/zstandard/lz4 on real gradients (a char-LSTM trained on
# the stdlib source; cached); then, as root with iproute2, compressed allreduce (lossless, bf16,
# int8, top-k, auto) against gloo on those gradients, 2 ranks in two network namespaces joined
# by a veth shaped to 1 Gbit/s.
# Open MPI refuses root without these two variables; --oversubscribe only on a 1-core machine.
MPIRUN = OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 $(VENV)/bin/mpirun \
	$$( [ "$$(nproc)" -lt 2 ] && echo --oversubscribe )
LINK_RUN = $(VENV)/bin/ringpress bench netns --nranks 2 --rate 1gbit -- \
	$(VENV)/bin/python -m ringpress_bench compressed --size 16M --repeats 3
demo: build
	$(VENV)/bin/ringpress info
	$(MPIRUN) -n 2 $(VENV)/bin/ringpress bench allreduce
	$(VENV)/bin/ringpress bench codecs --repeats 5
	@if [ "$$(id -u)" = 0 ] && command -v ip >/dev/null && command -v tc >/dev/null; then \
	  echo "$(LINK_RUN)"; \
	  $(LINK_RUN); \
	  rc=$$?; [ $$rc = 2 ] && echo "(shaped-link run skipped: namespaces could not be made here)"; \
	  [ $$rc = 0 ] || [ $$rc = 2 ]; \
	else \
	  echo "(shaped-link run skipped: it needs root and iproute2 for network namespaces)"; \
	fi

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
