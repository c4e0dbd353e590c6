# make run           install into .venv and start the dashboard (streamlit run app.py)
# make test          install into .venv and run the test suite
# make demo          install, train a small model on generated data (about a minute on CPU)
# make browser-deps  Debian packages for the browser end-to-end test (chromium, chromium-driver)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install run test demo browser-deps clean

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-birdnet.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-birdnet.txt
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m streamlit run app.py

test: install
	$(PY) -m pytest -q

demo: install
	$(PY) train_job.py --demo

browser-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		echo "chromium and chromedriver present"; \
	else \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache demo_data
