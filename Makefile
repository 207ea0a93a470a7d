# flatopt: the two commands of the README are `make demo` and `make test`.
# Everything the targets need is installed by the targets themselves (Python tools such as
# cmake go into the local virtualenv .venv).

CARGO   ?= cargo
PYTHON  ?= python3
PREFIX  ?= /usr/local
LIBDIR  ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DESTDIR ?=
VENV    := .venv
CMAKE   := $(VENV)/bin/cmake
export CARGO_TERM_COLOR ?= never

.PHONY: all lib demo demo-rust demo-online demo-csharp test lint test-rust test-c test-cpp \
        test-python test-csharp test-mpi test-rt test-bench test-install test-package \
        test-wheel test-sdist header install uninstall wheel sdist bench bench-rt bench-compare \
        fuzz miri fmt clean

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

## The online-learning control loop, paced in real time (cart-pole at 500 Hz, 6 s).
demo-online: lib
	bash examples/c/run_online_control.sh

## The C# game loop (examples/csharp/): an agent whose network learns online at 60 frames per
## second, one flatopt step per frame (installs Mono's mono-devel when missing).
demo-csharp: lib
	bash examples/csharp/run.sh

## Every test: formatting, clippy, Rust tests (including the header freshness check), the C and
## C++ test programs (plain, valgrind, AddressSanitizer), the Python binding (pytest on the
## pip-installed package), the C# binding under Mono, sharded training over MPI (1, 2, 3 ranks
## bit-identical to one process), the real-time checks (no allocation, lock or system call in
## steps; latency quick mode; the control loop unpaced), the install test (staged installs,
## pkg-config and CMake consumers, uninstall), the crate's package, and the Python wheel
## (without cargo) and sdist.
test: lint test-rust test-c test-cpp test-python test-csharp test-mpi test-rt test-bench \
      test-install test-package test-wheel test-sdist

## Formatting, clippy (with #![warn(missing_docs)]: every public item documented) and the API
## documentation without a warning (broken or private links), as docs.rs builds it.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps

test-rust:
	$(CARGO) test --all-targets
	$(CARGO) test --profile unoptimized --test unoptimized
	$(CARGO) test --doc

test-c: lib
	bash tests/c/run.sh

test-cpp: lib
	bash bindings/cpp/test/run.sh

## The pytest suite twice: in .venv with numpy only, then with JAX, brainstate, braintools and
## torch (bindings/python/requirements-extras.txt) in a virtualenv outside the clone that is kept
## between runs (${XDG_CACHE_HOME:-~/.cache}/flatopt/venv-extras-<hash>, about 5 GB, made once;
## where it cannot be installed the tests that need it print a skip). FLATOPT_SKIP_EXTRAS=1: the
## first run only.
test-python: $(VENV)/bin/python
	bash bindings/python/run_tests.sh

## The C# binding under Mono (installs mono-devel with apt-get when missing; skipped with a
## message where it cannot be installed).
test-csharp: lib
	bash bindings/csharp/test/run.sh

## Open MPI and mpi4py come from PyPI into .venv.
test-mpi: lib $(VENV)/bin/python
	bash examples/mpi/test_mpi.sh

test-rt: lib
	bash tests/rt/run.sh
	bash examples/c/run_online_control.sh --fast

test-install: lib $(CMAKE)
	CMAKE=$(abspath $(CMAKE)) bash tests/install/run.sh

## The crate as crates.io gets it: cargo publish --dry-run, and the list of files it carries.
test-package:
	bash packaging/check-crate.sh

## Binary wheel of the Python package with the library inside, for machines without a Rust
## toolchain: built against glibc 2.17 (cargo-zigbuild), tagged by auditwheel
## (py3-none-manylinux_2_17_<arch>), written to target/wheels/.
wheel:
	bash packaging/wheel.sh

## Source distribution of the Python package (carries the crate; pip builds it with cargo),
## written to target/wheels/.
sdist:
	bash packaging/sdist.sh

## The wheel in a fresh virtualenv with cargo and rustc off the PATH: versions, the README's
## Python quick start, the pytest suite. The wheel under test is built as `make wheel` builds
## it except for the release profile's single codegen unit and LTO (the packaging is what is
## tested here; those only decide how fast the machine code is, and cost minutes of CI).
test-wheel:
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_LTO=off bash packaging/wheel.sh
	bash tests/install/wheel.sh

## The sdist built from source by pip in a fresh virtualenv, then the same checks.
test-sdist: sdist
	bash tests/install/sdist.sh

## Regenerate include/flatopt.h with the pinned cbindgen (commit the result).
header:
	FLATOPT_BLESS=1 $(CARGO) test --test header

## Install into PREFIX (LIBDIR, INCLUDEDIR): the shared library with its SONAME links, the
## static library, the C and C++ headers, LIBDIR/pkgconfig/flatopt.pc and the CMake package
## LIBDIR/cmake/flatopt. DESTDIR stages the files (package builds); the pkg-config file and
## the CMake package name the final PREFIX. `make uninstall` with the same variables removes
## exactly those files.
install: lib
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" LIBDIR="$(LIBDIR)" INCLUDEDIR="$(INCLUDEDIR)" \
	  bash packaging/install.sh install

uninstall:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" LIBDIR="$(LIBDIR)" INCLUDEDIR="$(INCLUDEDIR)" \
	  bash packaging/install.sh uninstall

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip

$(CMAKE): $(VENV)/bin/python
	$(VENV)/bin/python -m pip install --quiet "cmake>=3.16"

## Quick mode of the comparison benchmark (sanity only: flatopt vs NumPy, the C driver, zero
## allocations, the table and plot render, every rule of the family against PyTorch and optax;
## no timing assertions). In the extras virtualenv of test-python where it exists, so that the
## torch and optax rows run; in .venv, where they print a skip, otherwise.
test-bench: lib $(VENV)/bin/python
	FLATOPT_SKIP_CARGO=1 bash benches/compare/build.sh
	$(VENV)/bin/python -m pip install --quiet numpy
	@if [ -z "$$FLATOPT_SKIP_EXTRAS" ] && extras=$$(bash bindings/python/extras_venv.sh); then \
	    echo "test-bench: compare.py --quick with torch, jax and optax ($$extras)"; \
	    PYTHONPATH=bindings/python FLATOPT_LIBRARY=$(CURDIR)/target/release/libflatopt.so \
	        "$$extras/bin/python" benches/compare/compare.py --quick; \
	else \
	    echo "test-bench: the extras virtualenv is unavailable: compare.py --quick in .venv" \
	        "(its torch and optax rows print a skip)"; \
	    $(VENV)/bin/python benches/compare/compare.py --quick; \
	fi

## Side by side with PyTorch, DeepSpeed and NumPy, interleaved in one run, then every base rule
## against PyTorch and optax (creates .venv-bench, about 6 GB with torch's CUDA wheels and
## jax; about 35 min + 1 h). Writes benches/compare/results/.
bench-compare: lib
	bash benches/compare/run.sh

## Criterion benches: every kernel per tier, the engine on 1 and 2 threads, the full pipeline,
## each next to a bandwidth probe with its access pattern.
bench:
	$(CARGO) bench --bench kernels

## The full latency benchmark (100,000 steps per layout; the README's table).
bench-rt: lib
	RT_FULL=1 bash tests/rt/run.sh

## Each cargo-fuzz target (checkpoint loading, configuration, stepping) for FUZZ_SECONDS each
## (nightly + cargo-fuzz). Interesting inputs go into fuzz/corpus, replayed by cargo test.
FUZZ_SECONDS ?= 60
fuzz:
	bash scripts/fuzz.sh $(FUZZ_SECONDS)

## Miri on the scalar paths (nightly; see scripts/miri.sh for what it covers).
miri:
	bash scripts/miri.sh

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf $(VENV)
