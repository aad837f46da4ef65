"""The GPU install's library versions: unsloth's wheel metadata, constraints-gpu.txt, and the checks between them.

A GPU user installs unsloth, and unsloth pins transformers/TRL/datasets below the CPU pins of requirements.txt.
constraints-gpu.txt holds what pip resolves for unsloth + unsloth_zoo (pinned in pyproject's `gpu` extra) + this
project's requirements, with torch at the CPU pin; .venv-gpu-compat (make install-gpu-compat) is built from it and
the suites touching transformers/TRL/datasets/PEFT run there (make test-gpu-compat).

Usage (both need the package index; the test, tests/test_gpu_constraints.py, stays offline):
  python tools/gpu_constraints.py refresh-metadata   # unsloth/unsloth_zoo wheels -> tests/fixtures/gpu/*.METADATA
  python tools/gpu_constraints.py resolve            # pip --dry-run --report -> constraints-gpu.txt
"""
from __future__ import annotations

import argparse
import email.parser
import json
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "gpu"
CONSTRAINTS = ROOT / "constraints-gpu.txt"
REQUIREMENTS = ROOT / "requirements.txt"
PYPROJECT = ROOT / "pyproject.toml"
UNSLOTH = ("unsloth", "unsloth-zoo")
# Resolved with unsloth but not installed in .venv-gpu-compat and only recorded (commented) in constraints-gpu.txt:
# they need CUDA, or are CUDA builds that must match the user's torch build (unsloth itself does not import
# without a GPU). unsloth's other, pure-Python dependencies are pinned in the file but not installed either.
NEEDS_CUDA = {"unsloth", "unsloth-zoo", "xformers", "triton", "bitsandbytes", "cut-cross-entropy", "torchao",
              "torchvision"}


def needs_cuda(name: str) -> bool:
    """NEEDS_CUDA, and the CUDA runtime wheels a CUDA torch pulls in where torch==X resolves to the CUDA build."""
    return name in NEEDS_CUDA or name.startswith(("nvidia-", "cuda-"))
# The platform every pin is resolved and checked for: Linux x86_64, CPython 3.11, no extras (so none of unsloth's
# cuXXX/colab/amd extras apply).
ENVIRONMENT = {"implementation_name": "cpython", "implementation_version": "3.11.7", "os_name": "posix",
               "platform_machine": "x86_64", "platform_python_implementation": "CPython",
               "platform_release": "", "platform_system": "Linux", "platform_version": "",
               "python_full_version": "3.11.7", "python_version": "3.11", "sys_platform": "linux", "extra": ""}


def applies(requirement: Requirement, extras: frozenset[str] = frozenset()) -> bool:
    """Whether a Requires-Dist line applies on ENVIRONMENT with `extras` requested (none: the base install)."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate(ENVIRONMENT | {"extra": extra}) for extra in {""} | set(extras))


def metadata_requirements(text: str) -> list[Requirement]:
    """The Requires-Dist of a wheel's METADATA that apply to a base install on Linux/CPython 3.11."""
    message = email.parser.Parser().parsestr(text, headersonly=True)
    return [req for req in map(Requirement, message.get_all("Requires-Dist") or []) if applies(req)]


def metadata_name_version(text: str) -> tuple[str, str]:
    message = email.parser.Parser().parsestr(text, headersonly=True)
    return canonicalize_name(message["Name"]), message["Version"]


def read_pins(text: str) -> dict[str, str]:
    """`name==version` lines of a requirements/constraints file (comments and blank lines skipped)."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        exact = [s.version for s in req.specifier if s.operator == "=="]
        if len(exact) != 1 or "*" in exact[0]:
            raise ValueError(f"not an exact pin: {line!r}")
        name = canonicalize_name(req.name)
        if name in pins and pins[name] != exact[0]:
            raise ValueError(f"{name} pinned twice: {pins[name]} and {exact[0]}")
        pins[name] = exact[0]
    return pins


def recorded_pins(text: str) -> dict[str, str]:
    """The commented `# name==version` lines of constraints-gpu.txt: resolved, left out because they need CUDA."""
    return {canonicalize_name(m[1]): m[2] for m in re.finditer(r"^# ([A-Za-z0-9_.-]+)==(\S+)\s*$", text, re.M)}


def violations(pins: dict[str, str], requirements: list[Requirement], who: str) -> list[str]:
    """Every pin that a requirement of `who` excludes, one line each (empty: all agree)."""
    found = []
    for req in requirements:
        version = pins.get(canonicalize_name(req.name))
        if version is not None and not req.specifier.contains(Version(version), prereleases=True):
            found.append(f"{canonicalize_name(req.name)}=={version} violates {who}'s requirement {req}")
    return found


def gpu_extra_pins() -> dict[str, str]:
    """The exact pins of pyproject's `gpu` extra (unsloth, unsloth_zoo and the versions tested with them)."""
    extra = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]["gpu"]
    pins = {}
    for line in extra:
        req = Requirement(line)
        exact = [s.version for s in req.specifier if s.operator == "=="]
        if len(exact) == 1:
            pins[canonicalize_name(req.name)] = exact[0]
    return pins


def unsloth_versions() -> dict[str, str]:
    pins = gpu_extra_pins()
    missing = [name for name in UNSLOTH if name not in pins]
    if missing:
        raise SystemExit(f"pyproject's gpu extra pins no exact version of {', '.join(missing)}")
    return {name: pins[name] for name in UNSLOTH}


def fixture_path(name: str, version: str) -> Path:
    return FIXTURES / f"{name.replace('-', '_')}-{version}.METADATA"


def unsloth_metadata() -> dict[str, str]:
    """{"unsloth==V": METADATA text, ...} for the pinned unsloth and unsloth_zoo, from tests/fixtures/gpu/."""
    return {f"{name}=={version}": fixture_path(name, version).read_text()
            for name, version in unsloth_versions().items()}


def refresh_metadata() -> None:
    """Download the pinned unsloth and unsloth_zoo wheels (no dependencies) and keep their METADATA as fixtures."""
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        specs = [f"{name}=={version}" for name, version in unsloth_versions().items()]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                        "-d", tmp, *specs], check=True)
        kept = set()
        for wheel in sorted(Path(tmp).glob("*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                member = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
                text = archive.read(member).decode()
            name, version = metadata_name_version(text)
            target = fixture_path(name, version)
            target.write_text(text)
            kept.add(target)
            print(f"{wheel.name} -> {target.relative_to(ROOT)}")
    for old in FIXTURES.glob("*.METADATA"):
        if old not in kept:
            old.unlink()


def closure(report: dict, roots: dict[str, frozenset[str]]) -> set[str]:
    """Names of everything `roots` (name -> extras) pulls in, by the resolved metadata in pip's report."""
    resolved = {canonicalize_name(item["metadata"]["name"]): item["metadata"] for item in report["install"]}
    seen: dict[str, frozenset[str]] = {}
    todo = list(roots.items())
    while todo:
        name, extras = todo.pop()
        if name not in resolved or (name in seen and extras <= seen[name]):
            continue
        seen[name] = seen.get(name, frozenset()) | extras
        for line in resolved[name].get("requires_dist", []):
            req = Requirement(line)
            if applies(req, seen[name]):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return set(seen)


def resolve(python: str) -> None:
    """pip's resolution of unsloth + unsloth_zoo + requirements.txt (each CPU pin kept unless unsloth's metadata
    excludes it) + torch at the CPU pin, written to constraints-gpu.txt."""
    versions = unsloth_versions()
    rules = {who: metadata_requirements(text) for who, text in unsloth_metadata().items()}
    cpu = read_pins(REQUIREMENTS.read_text())
    excluded = {}  # CPU pin -> the unsloth requirements it violates
    for name, version in cpu.items():
        why = sorted({f"{name}{req.specifier}" for reqs in rules.values() for req in reqs
                      if canonicalize_name(req.name) == name and not req.specifier.contains(Version(version), True)})
        if why:
            excluded[name] = why
    wanted = [name if name in excluded else f"{name}=={version}" for name, version in cpu.items()]
    wanted += [f"{name}=={version}" for name, version in versions.items()]
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        subprocess.run([python, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed", "--report",
                        str(report_path), *wanted], check=True)
        report = json.loads(report_path.read_text())
    resolved = {canonicalize_name(item["metadata"]["name"]): str(Version(item["metadata"]["version"]).public)
                for item in report["install"]}
    left_out = {name for name in resolved if needs_cuda(name)}
    compat = closure(report, {name: frozenset() for name in cpu}) - left_out
    only_unsloth = set(resolved) - compat - left_out
    spec = " ".join(f"{name}=={version}" for name, version in versions.items())
    lines = [
        "# The GPU install's versions (unsloth pins its own transformers/TRL/datasets), without what needs CUDA.",
        "# Written by `make resolve-gpu-constraints` (tools/gpu_constraints.py resolve): pip's resolution of",
        f"#   {spec} + requirements.txt (every CPU pin kept unless unsloth's metadata excludes it),",
        "# torch at the CPU pin (the CPU wheel where pip's find-links hold one, as for .venv; elsewhere PyPI's CUDA",
        "# build of that version, whose nvidia-* wheels are left out below), everything with its dependencies",
        "# (xformers, bitsandbytes, triton resolve on a CPU machine too), for Linux x86_64 / CPython 3.11.",
        "# Do not edit by hand. Used by .venv-gpu-compat",
        "# (make install-gpu-compat, -c this file) and by GPU users (README, GPU users); tests/test_gpu_constraints.py",
        "# checks every pin against the wheels' METADATA in tests/fixtures/gpu/ (make refresh-gpu-metadata).",
        "#",
        "# Differs from requirements.txt where unsloth's metadata excludes the CPU pin:",
    ]
    for name, why in sorted(excluded.items()):
        lines.append(f"#   {name} {cpu[name]} -> {resolved[name]}   (unsloth: {'; '.join(why)})")
    lines += ["", "# requirements.txt and what it pulls in: installed in .venv-gpu-compat"]
    lines += [f"{name}=={resolved[name]}" for name in sorted(compat)]
    lines += ["", "# unsloth's own dependencies that need no GPU: pinned for GPU users, not in .venv-gpu-compat"]
    lines += [f"{name}=={resolved[name]}" for name in sorted(only_unsloth)]
    lines += ["", "# resolved too, left out (recorded here, not pinned): unsloth does not import without a GPU, the",
              "# others are CUDA code or CUDA builds that must match the GPU user's torch build"]
    lines += [f"# {name}=={resolved[name]}" for name in sorted(left_out)]
    CONSTRAINTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {CONSTRAINTS.relative_to(ROOT)}: {len(compat)} packages for the compat env, "
          f"{len(only_unsloth)} of unsloth's own, {len(left_out)} recorded")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["refresh-metadata", "resolve"])
    parser.add_argument("--python", default=sys.executable, help="the interpreter whose pip resolves (resolve)")
    args = parser.parse_args(argv)
    if args.command == "refresh-metadata":
        refresh_metadata()
    else:
        resolve(args.python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
