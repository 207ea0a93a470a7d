# flatopt: the two commands of the README are `make demo` and `make test`.
# Everything the targets need is installed by the targets themselves (Python tools such as
# cmake go into the local virtualenv .venv).

CARGO   ?= cargo
PYTHON  ?= python3
PREFIX  ?= /usr/local
VENV    := .venv
CMAKE   := $(VENV)/bin/cmake
export CARGO_TERM_COLOR ?= never

.PHONY: all lib demo demo-rust test lint test-rust test-c test-cpp test-python test-install \
        header install bench fmt clean

all: lib

## The C library: target/release/libflatopt.{so,a}.
lib:
	$(CARGO) build --release
	bash packaging/dev-soname-link.sh target/release

## Build the library and run the main demo: a C MLP on handwritten digits, Adam vs
## Lookahead(Adam).
demo: lib
	bash examples/c/run_demo.sh

## The Rust demo (examples/train.rs).
demo-rust:
	$(CARGO) run --release --example train

## Every test: formatting, clippy, Rust tests (including the header freshness check), the C and
## C++ test programs (plain, valgrind, AddressSanitizer), the Python binding (pytest on the
## pip-installed package) and the install test (pkg-config and CMake consumers of an installed
## tree).
test: lint test-rust test-c test-cpp test-python test-install

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

test-rust:
	$(CARGO) test --all-targets
	$(CARGO) test --doc

test-c: lib
	bash tests/c/run.sh

test-cpp: lib
	bash bindings/cpp/test/run.sh

test-python: $(VENV)/bin/python
	bash bindings/python/run_tests.sh

test-install: lib $(CMAKE)
	CMAKE=$(abspath $(CMAKE)) bash tests/install/run.sh

## Regenerate include/flatopt.h with the pinned cbindgen (commit the result).
header:
	FLATOPT_BLESS=1 $(CARGO) test --test header

## Install into PREFIX: lib/, include/, lib/pkgconfig/, lib/cmake/flatopt/.
install: lib
	bash packaging/install.sh "$(PREFIX)"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip

$(CMAKE): $(VENV)/bin/python
	$(VENV)/bin/python -m pip install --quiet "cmake>=3.16"

## Criterion benches (kernels per tier, full pipeline, bandwidth probe).
bench:
	$(CARGO) bench --bench kernels

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf $(VENV)
