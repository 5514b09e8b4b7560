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

.PHONY: install test demo lint bench bench-gpu profile accuracy clean worker-requirements

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -rs tests

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m petseg.demo --workdir runs/demo

# The exact worker install for Dataflow's --requirements_file (docs/segment.md).
worker-requirements: $(STAMP)
	$(BIN)/python -m petseg.worker_requirements > requirements-worker.txt

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run --out benchmarks/results

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
