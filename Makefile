# Developer shortcuts. `make install test lint` mirrors what .ci/run does.
PYTHON ?= python
TORCH_VERSION ?= 2.13.0
OUT ?= runs/default

.PHONY: install test test-fast lint format train bench docs clean

install:  ## CPU torch first (no CUDA download), then the package with dev extras
	$(PYTHON) -m pip install torch==$(TORCH_VERSION)
	$(PYTHON) -m pip install -e '.[dev,docs]'

test:  ## every test, as .ci/run does (about 10 minutes on 2 cores)
	$(PYTHON) -m pytest -q

test-fast:  ## the inner loop: skip tests marked slow (subprocesses, torchrun, Sphinx, tutorials, long training or sampling)
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q -m "not slow"

lint:
	ruff check .
	ruff format --check .

format:
	ruff check --fix .
	ruff format .

train:  ## default run: digits, 4x8 categorical latent, Gumbel-softmax (about a minute on CPU)
	$(PYTHON) -m pyro_dvae train --out $(OUT) --force

bench:  ## estimator comparison on digits (benchmarks/run.py when present, else three quick runs)
	@if [ -f benchmarks/run.py ]; then $(PYTHON) benchmarks/run.py; else \
	  for args in "--estimator gumbel-softmax --kl relaxed" \
	              "--estimator gumbel-softmax --kl analytic" \
	              "--estimator st-gumbel --kl analytic"; do \
	    name=$$(echo $$args | sed 's/--estimator //; s/ --kl /-/'); \
	    $(PYTHON) -m pyro_dvae train --no-progress --force $$args --out runs/bench/$$name || exit 1; \
	  done; fi

docs:  ## HTML documentation in docs/_build/html (needs the docs extra; warnings are errors)
	$(PYTHON) -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache docs/_build docs/tutorials docs/api/generated docs/sg_execution_times.rst
