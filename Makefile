# ringpress developer entry points. The README's two commands are `make demo` and `make test`.
.PHONY: demo test setup build wheel format lint clean

VENV ?= .venv
export RP_VENV := $(VENV)

# The main job (grows with the project): today the lossless codec against blosc2, zstandard and
# lz4 on real gradients (a char-LSTM trained on the stdlib source; cached in bench/.cache).
demo: build
	$(VENV)/bin/python -m ringpress info
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
