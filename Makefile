# The two commands of the README:
#   make train   set-up, then the default job: train + evaluate on the bundled synthetic data (CPU)
#   make test    set-up, then the test suite
# Set-up (tools/setup_venv.sh, tools/build_ext.sh) creates or repairs .venv and (re)builds the op
# only when something changed; on a machine that is already set up it takes a few seconds.
PY := .venv/bin/python
CONFIG ?= configs/co_dino/co_dino_lite0_shapes.py
OUTPUT ?= output/$(basename $(notdir $(CONFIG)))
ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup test train clean

setup:
	@bash tools/setup_venv.sh
	@bash tools/build_ext.sh

test: setup
	@bash tools/fetch_test_data.sh $(PY)
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

train: setup
	$(PY) train_net.py --config-file $(CONFIG) train.device=cpu train.output_dir=$(OUTPUT) $(ARGS)

clean:
	rm -rf build projects/codetr/*.so output
