# The README's two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv and install the project (with its dev extras, pinned by
# constraints.txt) on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHARED ?= $(abspath ../shared)
export PETSEG_SHARED_DIR ?= $(SHARED)
export PETSEG_OXFORD_SAMPLE ?= $(SHARED)/data/oxford-pets-sample
export PETSEG_ENCODER_WEIGHTS ?= $(SHARED)/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test demo lint bench bench-backends bench-gpu profile accuracy clean worker-requirements flink flink-up flink-down bench-flink

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# The Flink tests need Beam's job server and Flink (make flink): fetched here
# where Java and Maven are installed, else those tests skip and say why.
test: $(STAMP)
	@if command -v mvn >/dev/null 2>&1 && command -v java >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory flink; \
	else echo "make test: no Java and Maven here; the Flink tests will skip"; fi
	$(BIN)/python -m pytest -q -rs tests

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m petseg.cli.demo --workdir runs/demo

# The exact worker install for Dataflow's --requirements_file (docs/segment.md).
# EXTRAS: the serving runtimes the workers run (--backend), e.g. openvino,onnx.
EXTRAS ?= openvino
worker-requirements: $(STAMP)
	$(BIN)/python -m petseg.cli.worker_requirements --extras "$(EXTRAS)" > requirements-worker.txt

# A Flink session cluster on localhost (docs/segment.md, "On Flink"): `flink`
# fetches Beam's job server (Maven) and Flink (PyPI) into .cache/flink,
# `flink-up` starts a JobManager, two TaskManagers and the SDK worker pool and
# prints the job's flags, `flink-down` stops them all.
flink: $(STAMP)
	$(BIN)/python -m beam_jobs.flink.cluster fetch

flink-up: flink
	$(BIN)/python -m beam_jobs.flink.cluster up

flink-down:
	$(BIN)/python -m beam_jobs.flink.cluster down

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The serving backends alone, side by side (benchmarks/backends.py).
bench-backends: $(STAMP)
	$(BIN)/python -m benchmarks.backends --out benchmarks/results

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run --out benchmarks/results

# The job on the localhost Flink cluster against the DirectRunner (benchmarks/flink.py).
bench-flink: flink
	$(BIN)/python -m benchmarks.flink --out benchmarks/results

# The bench model's serving and training step on the GPU TensorFlow sees
# (docs/benchmarks.md, "On a GPU"); without one it exits 1 and measures nothing.
bench-gpu: $(STAMP)
	$(BIN)/python -m benchmarks.gpu --out benchmarks/results

profile: $(STAMP)
	$(BIN)/python -m benchmarks.profile --out benchmarks/results

accuracy: $(STAMP)
	$(BIN)/python train.py --data-dir $(PETSEG_OXFORD_SAMPLE) \
	  --encoder-weights $(PETSEG_ENCODER_WEIGHTS) --workdir runs/accuracy \
	  --image-size 128 --batch-size 8 --epochs 3 --fine-tune-epochs 30 \
	  --learning-rate 1e-3 --fine-tune-learning-rate 2e-4 --lr-schedule cosine \
	  --min-crop-scale 0.7 --colour-jitter 0.1 --validation-freq 5 \
	  --serve-image-size 160 --tta-flip
	$(BIN)/python train.py evaluate --model runs/accuracy/export \
	  --data-dir $(PETSEG_OXFORD_SAMPLE) --split test

clean:
	rm -rf runs .pytest_cache
