# ringpress developer entry points. The README's two commands are `make demo` and `make test`.
.PHONY: demo test setup build wheel format lint clean

VENV ?= .venv
export RP_VENV := $(VENV)

demo: build
	$(VENV)/bin/python -m ringpress demo

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
