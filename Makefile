# The table of contents. `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench typecheck clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)  ## export the headline model (YOLOv8s + ECA) to ONNX, verified against PyTorch
	$(BIN)/attn-deploy export --model yolov8-eca

test: $(STAMP)  ## the whole suite, CPU only (GPU tests skip with a reason)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)  ## TensorRT code against tensorrt-stubs
	$(BIN)/pip install -q --no-deps tensorrt-stubs==10.13.0.35.1  # stubs only: their tensorrt dep needs NVIDIA's index
	$(BIN)/mypy attn_deploy/backends

bench: $(STAMP)  ## attention cost tables + backend latency, stored under benchmarks/results/
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) engines/*/ .pytest_cache
