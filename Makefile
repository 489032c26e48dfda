# Two set-up commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint serve-env dev-env prometheus chromium

# Serving environment: the service's dependencies only (no torch).
$(BIN)/.serve-env: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=25.1"
	$(BIN)/pip install -q -e .
	touch $@

# Development environment: serving + offline (torch, onnx, teacher) + dev tools.
# facenet-pytorch pins torch<2.3 and numpy<2 although it runs on current ones; install it WITHOUT its
# dependencies. It provides the MTCNN weights and the reference detector for the parity test.
$(BIN)/.dev-env: $(BIN)/.serve-env
	$(BIN)/pip install -q -e ".[offline]" --group dev
	$(BIN)/pip install -q --no-deps facenet-pytorch==2.6.0
	touch $@

# A real prometheus + promtool for tests/test_deploy.py (Debian package; CI runs as root on Debian).
prometheus:
	command -v prometheus >/dev/null || (apt-get update -qq && apt-get install -y -qq prometheus)

# A real headless browser for tests/test_demo.py (Debian's chromium + its chromedriver, driven by Selenium).
chromium:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver)

serve-env: $(BIN)/.serve-env
dev-env: $(BIN)/.dev-env

run: $(BIN)/.serve-env
	$(BIN)/faceverify serve --host 127.0.0.1 --port 8000

lint: $(BIN)/.dev-env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(BIN)/.dev-env prometheus chromium
	$(BIN)/ruff check .
	$(BIN)/mypy  # faces/, model_store/, service/ ([tool.mypy] in pyproject.toml)
	$(BIN)/pytest
