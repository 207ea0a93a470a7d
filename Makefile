# flatopt: the two commands of the README are `make demo` and `make test`.
# Everything the targets need is installed by the targets themselves.

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all build demo test test-rust lint fmt bench clean

all: build

build:
	$(CARGO) build --release

## Build the library and run the main demo (a small model trained with Lookahead(Adam)).
demo:
	$(CARGO) run --release --example train

## Every test: formatting, clippy, Rust unit/integration/doc tests.
test: lint test-rust

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

test-rust:
	$(CARGO) test --all-targets
	$(CARGO) test --doc

fmt:
	$(CARGO) fmt --all

## Criterion benches (kernels per tier, full pipeline, bandwidth probe).
bench:
	$(CARGO) bench --bench kernels

clean:
	$(CARGO) clean
