# Triptych: the two commands a new user types are `make predict` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WEIGHTS_DIR ?= weights
PREDICTOR ?= nst
# One torch thread per process: on small shared machines more threads are slower.
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: setup test lint predict smoke mutation weights bench-nst bench-sd-style bench-pose bench-musepose gpu-check \
        serve-nst serve-sd-style serve-sd-style-xl serve-musepose build-nst build-sd-style build-sd-style-xl build-musepose schema docs pictures clean

$(STAMP): requirements/base.txt requirements/dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements/dev.txt
	touch $(STAMP)

setup: $(STAMP)

test: lint
	$(PY) -m pytest -n 2 --dist loadgroup -q tests

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Offline, without VGG19, it still writes the fast (feed-forward) result and says how to get the full one.
predict: setup
	$(PY) -m tools.run_predictor predictors/nst/predict.py --fallback predictors/nst/predict.py:FastResult \
	    -i image=@examples/content.jpg -i style_image=@examples/style.png -o outputs/

smoke: setup
	$(PY) -m tools.smoke

# Not part of `make test`: the mutations of tests/mutations/ in a throwaway copy, with the tests that must
# catch them. MUTATION_ARGS, e.g. "--area nst", "--only ID ..." or "--no-shared" (see tools/mutation.py).
mutation: setup
	$(PY) -m tools.mutation $(MUTATION_ARGS)

weights: setup
	WEIGHTS_DIR=$(WEIGHTS_DIR) $(PY) -m tools.weights fetch $(PREDICTOR)

schema: setup
	$(PY) -m tools.cog_schema predictors/$(PREDICTOR)/predict.py

# The input tables in docs/ come from the schema the Cog CLI would write; never edit them by hand.
docs: setup
	$(PY) -m tools.input_tables

pictures: setup
	$(PY) -m tools.readme_pictures

bench-nst: setup
	$(PY) -m bench.nst
bench-sd-style: setup
	$(PY) -m bench.sd_style
bench-pose: setup
	$(PY) -m bench.pose
bench-musepose: setup
	$(PY) -m bench.musepose
# On a GPU host: one table of what each predictor costs on this card (full-size random weights, <= 8 min).
# GPU_CHECK_ARGS="--dry" runs the same code at tiny sizes on the CPU.
gpu-check: setup
	$(PY) -m bench.gpu_check $(GPU_CHECK_ARGS)

serve-nst:
	cog serve -p 5000
serve-sd-style:
	cog serve -f cog.sd-style.yaml -p 5000
serve-sd-style-xl:
	cog serve -f cog.sd-style-xl.yaml -p 5000
serve-musepose:
	cog serve -f cog.musepose.yaml -p 5000
build-nst:
	cog build -t triptych-nst
build-sd-style:
	cog build -f cog.sd-style.yaml -t triptych-sd-style
build-sd-style-xl:
	cog build -f cog.sd-style-xl.yaml -t triptych-sd-style-xl
build-musepose:
	cog build -f cog.musepose.yaml -t triptych-musepose

clean:
	rm -rf .cache .pytest_cache .ruff_cache outputs
