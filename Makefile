# The two commands of the README: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean deb repo register-map

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The simulator and the runtime on the bundled site, with a live view; Ctrl-C stops both.
# Options: make demo SCENARIO=thd-rise SPEED=10 (scenarios: busguard simulate --help).
SCENARIO ?= normal
SPEED ?= 1
demo: $(STAMP)
	$(BIN)/busguard check site.toml
	$(BIN)/busguard demo site.toml --scenario $(SCENARIO) --speed $(SPEED)

test: $(STAMP)
	$(BIN)/ruff check runtime plugins bench tests
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check runtime plugins bench tests

# docs/register-map.md is generated from the map definition for the bundled site (a test
# fails when it is out of date): run this after changing site.toml or the map.
register-map: $(STAMP)
	$(BIN)/busguard map site.toml --format md -o docs/register-map.md

clean:
	rm -rf $(VENV) build *.egg-info runtime/*.egg-info plugins/*.egg-info var

# The Debian package (dist/busguard_<version>_all.deb); see packaging/README.md.
# Install test in a fresh Debian root (root, network to the Debian mirror):
#   sudo packaging/test-install.sh dist/busguard_*_all.deb
deb: $(STAMP)
	PYTHON=$(BIN)/python packaging/build-deb.sh dist

# A signed APT repository of dist/ in dist/repo (packaging/make-repo.sh; docs/operations.md,
# "A fleet"): BUSGUARD_REPO_KEY=KEYID signs with your key, else a throw-away test key.
repo: deb
	packaging/make-repo.sh dist dist/repo
