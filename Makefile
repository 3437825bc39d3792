# The table of contents. `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint bench gpu-check typecheck wheel-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)  ## export the headline model (YOLOv8s + ECA) to ONNX, verified against PyTorch
	$(BIN)/attn-deploy export --model yolov8-eca

test: $(STAMP)  ## the whole suite, CPU only (GPU tests skip with a reason), in 2 workers; prints the 15 slowest tests
	$(BIN)/pytest -q -n 2 --durations=15

test-fast: $(STAMP)  ## the development loop: everything not marked slow (under 2 minutes on 2 cores)
	$(BIN)/pytest -q -m "not slow" --durations=5

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)  ## TensorRT code against tensorrt-stubs
	# Stubs only (their tensorrt dep needs NVIDIA's index), into build/stubs (pyproject: mypy_path), not the venv:
	# installed there they make `import tensorrt` succeed as an empty namespace package.
	rm -rf build/stubs
	$(BIN)/pip install -q --no-deps --target build/stubs tensorrt-stubs==10.13.0.35.1
	# The published stubs have two syntax errors (a parameter named `in`, a non-default after a default).
	sed -i -e 's/\bin: list/in_: list/' -e 's/channel_axis: int)/channel_axis: int = 0)/' build/stubs/tensorrt_bindings/tensorrt.pyi
	$(BIN)/mypy attn_deploy/backends

bench: $(STAMP)  ## attention cost tables + backend latency, stored under benchmarks/results/
	$(BIN)/python -m benchmarks.run_all

gpu-check: $(STAMP)  ## on a GPU machine: torch CUDA eager vs CUDA graphs, ORT CUDA, TensorRT -> benchmarks/results/gpu-check.json
	$(BIN)/python -m benchmarks.gpu_check

wheel-check:  ## build a wheel, install it into a fresh venv, export from an empty directory
	bash .ci/wheel-check

clean:
	rm -rf $(VENV) engines/*/ .pytest_cache
