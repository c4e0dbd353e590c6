# make test   install into .venv and run the test suite
# make demo   install, train a small model on generated data (a few minutes on CPU)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test demo clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

demo: install
	$(PY) train_job.py --demo

clean:
	rm -rf $(VENV) .pytest_cache demo_data
