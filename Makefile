# The two commands of the quick start: `make demo` and `make test`. Each sets up .venv
# when pyproject.toml changed (a stamp file makes the set-up a no-op otherwise).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test ui setup clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,inception,s3]'
	touch $(STAMP)

setup: $(STAMP)

# RESUME=outputs/tune/<job> continues an interrupted demo
demo: $(STAMP)
	$(BIN)/distgan demo $(if $(RESUME),--resume $(RESUME))

ui: $(STAMP)
	$(BIN)/distgan ui

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) outputs
