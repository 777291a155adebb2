# mmvit3: `make test` sets everything up (see tools/setup_env.sh) and runs the
# tests; `make demo` sets up, then trains and evaluates the demo on CPU.
PYTHON ?= python3
export PYTHON

.PHONY: setup test
setup:
	bash tools/setup_env.sh

test: setup
	$(PYTHON) -m pytest tests
