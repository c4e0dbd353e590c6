# make install       install into .venv, with this checkout as the birdclef package (editable: .venv/bin/birdclef)
# make run           install into .venv and start the dashboard (streamlit run app.py)
# make api           install into .venv and start the classification API (python -m birdcore.serve)
# make test          install into .venv and run the test suite
# make demo          install, train a small model on generated data (about a minute on CPU)
# make docs          install and serve the user guide (docs/, mkdocs.yml) on http://127.0.0.1:$(DOCS_PORT)
# make browser-deps  Debian packages for the browser end-to-end test (chromium, chromium-driver)
# make proxy-deps    Debian packages for running the nginx example in the deployment test (nginx, openssl)
# The install and start steps are scripts/*.sh, which the Dockerfile runs too (docs/deploy.md); only
# the editable install of this checkout (pyproject.toml) is make's own.
VENV ?= .venv
PY := $(VENV)/bin/python
DOCS_PORT ?= 8001

.PHONY: install run api test demo docs browser-deps proxy-deps clean

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-birdnet.txt scripts/install.sh pyproject.toml
	VENV=$(VENV) bash scripts/install.sh --dev
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

run: install
	PYTHON=$(abspath $(PY)) bash scripts/start-dashboard.sh

api: install
	PYTHON=$(abspath $(PY)) bash scripts/start-api.sh

test: install
	$(PY) -m pytest -q

demo: install
	PYTHON=$(abspath $(PY)) bash scripts/start-trainer.sh --demo

docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve --dev-addr 127.0.0.1:$(DOCS_PORT)

browser-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		echo "chromium and chromedriver present"; \
	else \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; \
	fi

proxy-deps:
	@if command -v nginx >/dev/null && command -v openssl >/dev/null; then \
		echo "nginx and openssl present"; \
	else \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nginx openssl; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache demo_data
