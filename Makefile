# ShiftAdd Studio — two commands on a fresh machine:
#   make run    set up what is missing, build, open the app (headless: train the default experiment)
#   make test   set up what is missing, then lint and run the whole test suite
# Both are idempotent. Set-up installs the PyPI `torch` wheel that `tch` expects into the
# git-ignored .venv (libtorch comes from it), and the Debian Fashion-MNIST and Mesa Vulkan (software
# rendering for the image tests) packages when apt works.

SHELL := /bin/bash
PYTHON ?= python3
TORCH_VERSION := 2.13.0
VENV := .venv
TORCH_STAMP := $(VENV)/.torch-$(TORCH_VERSION)
FMNIST_DIR := /usr/share/datasets/fashion-mnist
DEFAULT_EXPERIMENT := experiments/smoke.toml

.PHONY: setup libtorch fashion-mnist vulkan build run test lint bench fuzz soak

setup: libtorch fashion-mnist vulkan

libtorch: $(TORCH_STAMP)

$(TORCH_STAMP):
	@echo "setup: installing torch==$(TORCH_VERSION) into $(VENV) (libtorch for tch; ~4.7 GB, a few minutes)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION)
	ln -sfn "$$($(VENV)/bin/python -c 'import pathlib, torch; print(pathlib.Path(torch.__file__).parent)')" $(VENV)/torch
	touch $@

fashion-mnist:
	@if [ -d "$(FMNIST_DIR)" ]; then exit 0; fi; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "setup: installing dataset-fashion-mnist"; \
		(apt-get update -q && apt-get install -y -q dataset-fashion-mnist) >/dev/null \
			|| echo "setup: warning: could not install dataset-fashion-mnist; Fashion-MNIST presets need data.dir"; \
	else \
		echo "setup: note: apt not usable; Fashion-MNIST presets need its idx files (set data.dir)"; \
	fi

# Mesa's software Vulkan (lavapipe): the image tests render the app with wgpu, no GPU needed.
vulkan:
	@if ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then exit 0; fi; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "setup: installing mesa-vulkan-drivers (software rendering for the image tests)"; \
		(apt-get update -q && apt-get install -y -q mesa-vulkan-drivers) >/dev/null \
			|| echo "setup: warning: could not install mesa-vulkan-drivers; the image tests will fail"; \
	else \
		echo "setup: note: apt not usable; the image tests need a Vulkan driver (mesa-vulkan-drivers)"; \
	fi

build: setup
	cargo build

run: build
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ]; then \
		echo "run: opening ShiftAdd Studio (the default experiment is ready in Launch)"; \
		cargo run --quiet -p shiftadd-app --bin shiftadd; \
	else \
		echo "run: no display; training the default experiment headless"; \
		cargo run --quiet -p shiftadd-app --bin shiftadd -- train $(DEFAULT_EXPERIMENT) && \
		echo "run: results are in the database named above; list them with: cargo run -q --bin shiftadd -- runs"; \
	fi

lint: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

test: lint
	cargo test --workspace

# Benchmarks (issues 4, 5, 17): the PyTorch Python reference and the criterion benches on the same
# threads, then the ratio tables; whole epochs of this tree against the commit before issue 17
# (built once in a worktree under target/); the UI frame. About 45 minutes on 2 cores the first
# time (the old commit's build), 35 after; nothing else should run meanwhile.
BENCH_THREADS ?= 2
bench: setup
	mkdir -p target
	$(VENV)/bin/python experiments/bench/torch_reference.py --threads $(BENCH_THREADS) > target/bench-torch.json
	SHIFTADD_BENCH_THREADS=$(BENCH_THREADS) cargo bench -p shiftadd-core
	$(VENV)/bin/python experiments/bench/summary.py target/criterion target/bench-torch.json
	$(PYTHON) experiments/bench/epoch.py --threads $(BENCH_THREADS) --json target/bench-epoch.json
	cargo bench -p shiftadd-app --bench ui_frame

# A million mutated inputs per parser (config, study, idx, CIFAR, models, databases imported,
# listed and deleted from, nothing outside their checkpoint folders changed): 0 panics,
# 0 hangs, or exit 1 with the first finding saved (issue 21). FUZZ_CASES / FUZZ_SEED to change.
# The debug build: the engine is compiled at opt-level 2 there but keeps its overflow checks, so an
# integer overflow on a mutated header is a finding too.
FUZZ_CASES ?= 1000000
FUZZ_SEED ?= 1
fuzz: setup
	cargo run -p shiftadd-tests --bin fuzz -- --cases $(FUZZ_CASES) --seed $(FUZZ_SEED)

# Four trainers and a reader polling like the app on one database for SOAK_MINUTES (not in CI):
# lock errors, WAL size, trainer RSS and every run's steps checked at the end (issue 21).
SOAK_MINUTES ?= 30
soak: setup
	cargo build -p shiftadd-app -p shiftadd-tests --bins
	target/debug/soak --minutes $(SOAK_MINUTES) --dir target/soak
