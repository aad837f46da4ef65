"""constraints-gpu.txt (the versions a GPU install resolves to) agrees with the pinned unsloth and unsloth_zoo wheels.

Offline: the wheels' METADATA files are kept in tests/fixtures/gpu/ (`make refresh-gpu-metadata` downloads them
again); tools/gpu_constraints.py parses them with `packaging` for Linux x86_64 / CPython 3.11 without extras.
"""
import importlib.util
import re

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from lib.paths import PROJECT_ROOT

spec = importlib.util.spec_from_file_location("gpu_constraints", PROJECT_ROOT / "tools" / "gpu_constraints.py")
gpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu)

CONSTRAINTS_TEXT = gpu.CONSTRAINTS.read_text()
PINS = gpu.read_pins(CONSTRAINTS_TEXT)
RECORDED = gpu.recorded_pins(CONSTRAINTS_TEXT)
CPU_PINS = gpu.read_pins(gpu.REQUIREMENTS.read_text())
METADATA = gpu.unsloth_metadata()
RULES = {who: gpu.metadata_requirements(text) for who, text in METADATA.items()}


def all_violations(pins: dict[str, str]) -> list[str]:
    return [line for who, reqs in RULES.items() for line in gpu.violations(pins, reqs, who)]


def test_the_fixtures_are_the_wheels_pyproject_pins():
    pinned = gpu.unsloth_versions()
    assert set(pinned) == {"unsloth", "unsloth-zoo"}
    for name, version in pinned.items():
        assert gpu.metadata_name_version(gpu.fixture_path(name, version).read_text()) == (name, version)
        assert RECORDED[name] == version, f"constraints-gpu.txt was resolved for another {name}: resolve it again"
    assert sorted(p.name for p in gpu.FIXTURES.glob("*.METADATA")) == sorted(
        gpu.fixture_path(name, version).name for name, version in pinned.items())


def test_every_pin_satisfies_every_requirement_of_unsloth_and_unsloth_zoo():
    checked = {canonicalize_name(req.name) for reqs in RULES.values() for req in reqs} & set(PINS | RECORDED)
    # the libraries this project calls are among the checked ones (a parse that found nothing would pass vacuously)
    assert {"transformers", "trl", "datasets", "peft", "accelerate", "torch", "huggingface-hub"} <= checked
    assert all_violations(PINS | RECORDED) == []


def test_the_check_fails_on_the_cpu_pins():
    found = all_violations(CPU_PINS)
    for name in ("transformers", "trl", "datasets"):
        assert any(line.startswith(f"{name}=={CPU_PINS[name]} violates unsloth") for line in found), name
    assert not any(line.startswith(("torch==", "peft==", "accelerate==")) for line in found)


@pytest.mark.parametrize("pin, expected", [
    ("transformers==5.18.0", "transformers==5.18.0 violates unsloth=="),
    ("transformers==5.0.0", "transformers==5.0.0 violates"),  # an excluded release inside the range
    ("datasets==4.4.1", "datasets==4.4.1 violates"),  # != 4.4.*
    ("peft==0.17.0", "peft==0.17.0 violates"),
    ("torch==2.15.0", "torch==2.15.0 violates"),
    ("certifi==2025.1.31", "certifi==2025.1.31 violates"),
])
def test_a_constraint_outside_a_specifier_is_reported(pin, expected):
    name, version = pin.split("==")
    text = re.sub(rf"^{name}==\S+$", pin, CONSTRAINTS_TEXT, flags=re.M)  # constraints-gpu.txt with one pin changed
    assert gpu.read_pins(text)[name] == version
    assert any(line.startswith(expected) for line in all_violations(gpu.read_pins(text) | RECORDED))


def test_markers_are_evaluated_for_linux_cpython_311_without_extras():
    text = "\n".join([
        "Metadata-Version: 2.4", "Name: demo", "Version: 1.0",
        'Requires-Dist: triton>=3.0.0; "linux" in sys_platform',
        'Requires-Dist: mlx==0.32.4; sys_platform == "darwin" and platform_machine == "arm64"',
        'Requires-Dist: xformers==0.0.1; extra == "cu121"',
        'Requires-Dist: old==1.0; python_version < "3.10"',
        "Requires-Dist: plain<2", "", "long description"])
    assert [r.name for r in gpu.metadata_requirements(text)] == ["triton", "plain"]
    assert gpu.violations({"plain": "2.0", "mlx": "1.0", "xformers": "9"}, gpu.metadata_requirements(text), "demo") \
        == ["plain==2.0 violates demo's requirement plain<2"]


def test_a_loose_or_twice_pinned_line_is_refused():
    with pytest.raises(ValueError, match="not an exact pin"):
        gpu.read_pins("transformers>=5.0\n")
    with pytest.raises(ValueError, match="pinned twice"):
        gpu.read_pins("trl==1.15.0\nTRL==1.16.0\n")


def test_the_gpu_env_differs_from_the_cpu_env_only_where_unsloth_forces_it():
    for name, cpu_version in CPU_PINS.items():
        assert name in PINS, f"{name} (requirements.txt) has no pin in constraints-gpu.txt"
        if all_violations({name: cpu_version}):
            assert PINS[name] != cpu_version
        else:
            assert PINS[name] == cpu_version, f"{name}: the CPU pin {cpu_version} fits unsloth, keep it"
    assert {n for n in CPU_PINS if PINS[n] != CPU_PINS[n]} == {"transformers", "trl", "datasets"}


def test_nothing_that_needs_cuda_is_pinned_for_the_compat_env():
    assert not [name for name in PINS if gpu.needs_cuda(name)]
    assert {"unsloth", "unsloth-zoo", "xformers", "bitsandbytes", "triton"} <= set(RECORDED)


def test_the_gpu_extra_pins_the_tested_versions():
    extra = gpu.gpu_extra_pins()
    for name in ("transformers", "trl", "datasets", "peft", "accelerate", "tokenizers", "huggingface-hub",
                 "safetensors", "torch", "bitsandbytes", "unsloth", "unsloth-zoo"):
        assert name in extra, f"pyproject's gpu extra does not pin {name}"
    for name, version in extra.items():
        if name != "llama-cpp-python":  # not part of the resolution: the Makefile's LLAMA_CPP_VERSION
            assert (PINS | RECORDED)[name] == version, f"gpu extra {name}=={version}, tested {(PINS | RECORDED)[name]}"
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert extra["llama-cpp-python"] == re.search(r"^LLAMA_CPP_VERSION := (\S+)", makefile, re.M)[1]


# ---- the tests .venv-gpu-compat runs (Makefile GPU_COMPAT_TESTS) ----
HF_LIBRARIES = {"transformers", "trl", "datasets", "peft", "accelerate"}
# import lib.models only for packaged_gguf (a file path) and lib.__main__ for its `eval` command: llama.cpp reads
# the GGUF, no HF library runs
NO_HF_CODE_RUNS = {"tests/teacher/test_llama_cpp.py", "tests/evaluate/test_eval_cli.py",
                   "tests/evaluate/test_batched.py", "tests/serve/test_server.py"}


def imported_modules(path) -> set[str]:
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def importing_hf(paths, hf_lib_modules=frozenset()) -> set[str]:
    return {str(p.relative_to(PROJECT_ROOT)) for p in paths
            if {m.split(".")[0] for m in imported_modules(p)} & HF_LIBRARIES or imported_modules(p) & hf_lib_modules}


def gpu_compat_tests() -> list[str]:
    makefile = (PROJECT_ROOT / "Makefile").read_text().replace("\\\n", " ")
    return re.search(r"^GPU_COMPAT_TESTS := (.*)$", makefile, re.M)[1].split()


def test_the_gpu_env_runs_every_test_file_that_imports_the_libraries_unsloth_pins():
    lib_files = sorted((PROJECT_ROOT / "lib").rglob("*.py"))
    hf_lib = {".".join(p.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")
              for p in lib_files if str(p.relative_to(PROJECT_ROOT)) in importing_hf([p])}
    assert {"lib.models", "lib.train.backends", "lib.data.sources"} <= hf_lib
    needed = importing_hf(sorted((PROJECT_ROOT / "tests").rglob("test_*.py")), frozenset(hf_lib)) - NO_HF_CODE_RUNS
    listed = gpu_compat_tests()
    assert all((PROJECT_ROOT / entry).exists() for entry in listed)
    missing = sorted(f for f in needed if not any(f == e or f.startswith(e.rstrip("/") + "/") for e in listed))
    assert missing == [], f"add to GPU_COMPAT_TESTS in the Makefile: {missing}"
    assert "tests/test_slow_smollm2.py" in listed and "tests/test_golden_restructure.py" in listed


def test_make_test_runs_the_gpu_env_and_ends_with_the_cpu_pytest():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    prerequisites = re.search(r"^test: (.*)$", makefile, re.M)[1].split()
    assert "test-gpu-compat" in prerequisites and prerequisites[-1] == "test-unit"
