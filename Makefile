# pgh: `make help` lists the targets.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install install-gpu test test-all train data bench-eval bench-index bench-gpu bench-baselines bench-pgh bench-deep sweep-baselines report lint clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## create .venv and install pgh with the dev extras

install-gpu: $(VENV)/.installed ## on a CUDA machine: add faiss-gpu (CUDA 12 wheels) and make its files the ones faiss imports
	$(PIP) install --quiet -e '.[gpu]'
	$(PIP) install --quiet --force-reinstall --no-deps 'faiss-gpu>=1.8'
	$(PY) -c "from pgh.retrieval.index import gpu_available; print('FAISS search on the GPU:', gpu_available())"

test: $(VENV)/.installed ## run the tests (installs first when .venv/.installed is missing or older than pyproject.toml); slow ones excluded
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: $(VENV)/.installed ## run every test, the slow ones too
	$(PY) -m pytest $(PYTEST_ARGS)

train: $(VENV)/.installed ## the main job: PGH+GIST, 32 bits, mnist5k, CPU-sized (experiment=pgh_mnist5k; ARGS="bits=64")
	$(VENV)/bin/pgh-train experiment=pgh_mnist5k $(ARGS)

data: ## install the offline Fashion-MNIST (Debian package dataset-fashion-mnist)
	@if [ -d /usr/share/datasets/fashion-mnist ]; then echo "fashion-mnist already in /usr/share/datasets/fashion-mnist"; \
	else apt-get update && apt-get install -y dataset-fashion-mnist; fi

bench-eval: $(VENV)/.installed ## time exact mAP@all and FAISS top-100 (exact and IVF) over 1M codes -> benchmarks/eval.md
	$(PY) benchmarks/bench_eval.py $(ARGS)

bench-index: $(VENV)/.installed ## time pgh-index's reading and coding of 20,000 PNGs and 3,000 JPEGs, by worker and thread count -> benchmarks/index.md
	$(PY) benchmarks/bench_index.py $(ARGS)

bench-gpu: $(VENV)/.installed ## on a CUDA machine: PGH throughput (32-true, bf16), make train's job on the GPU, DDP, FAISS CPU vs GPU -> benchmarks/gpu.md
	$(PY) benchmarks/bench_gpu.py $(ARGS)

bench-baselines: $(VENV)/.installed ## LSH/ITQ/SH/SpH x pixels/GIST x 16/32/64 bits -> benchmarks/baselines.md + README
	$(PY) benchmarks/bench_baselines.py $(ARGS)

bench-pgh: $(VENV)/.installed ## PGH on mnist5k and fashion_mnist with per-round mAP -> benchmarks/pgh.md + README
	$(PY) benchmarks/bench_pgh.py $(ARGS)

bench-deep: $(VENV)/.installed ## DH, DeepBit, BGAN on mnist5k and fashion_mnist x 16/32/64 bits -> benchmarks/deep.md + README
	$(PY) benchmarks/bench_deep.py $(ARGS)

sweep-baselines: $(VENV)/.installed ## the same grid as a Hydra multirun (add ARGS="hydra/launcher=slurm hydra.launcher.gpus_per_node=0" on a cluster)
	$(VENV)/bin/pgh-train -m -cd sweeps -cn baselines $(ARGS)

report: $(VENV)/.installed ## pgh-report: tables and curves from finished runs (ARGS="<run or sweep dirs> --out <dir>")
	$(VENV)/bin/pgh-report $(ARGS)

lint: $(VENV)/.installed ## ruff
	$(VENV)/bin/ruff check pgh hydra_plugins tests benchmarks

clean: ## remove run outputs, reports and caches (not .venv)
	rm -rf logs outputs multirun reports .cache .pytest_cache
