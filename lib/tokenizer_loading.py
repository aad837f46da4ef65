"""Load a tokenizer: a shipped fixture of the model's family (dry-run, tests) or the model's own.

Usage: ``tok = load_fixture_tokenizer("llama3_2")``
"""
from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

from lib.paths import FIXTURES_DIR, cache_dir, publish_dir

TOKENIZER_FIXTURES = FIXTURES_DIR / "tokenizers"


def fixture_names() -> list[str]:
    return sorted(p.name for p in TOKENIZER_FIXTURES.iterdir() if (p / "tokenizer_config.json").is_file())


def fixture_dir(name: str) -> Path:
    """A loadable folder for fixture `name`: `tokenizer.json.gz` decompressed once into the user cache.

    The cache key is the compressed file's hash, so an updated fixture never reuses a stale copy.
    """
    source = TOKENIZER_FIXTURES / name
    if not (source / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"no tokenizer fixture {name!r} in {TOKENIZER_FIXTURES}; known: "
                                f"{', '.join(fixture_names())}")
    packed = (source / "tokenizer.json.gz").read_bytes()
    target = cache_dir() / "tokenizers" / f"{name}-{hashlib.sha256(packed).hexdigest()[:12]}"

    def fill(folder: Path) -> None:
        (folder / "tokenizer.json").write_bytes(gzip.decompress(packed))
        shutil.copy(source / "tokenizer_config.json", folder / "tokenizer_config.json")

    publish_dir(target, fill, "tokenizer.json")
    return target


def load_fixture_tokenizer(name: str):
    """The real tokenizer + chat template of family `name`, offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(fixture_dir(name))


def load_model_tokenizer(path_or_id: str, trust_remote_code: bool = False):
    """The tokenizer stored with a model folder (or hub id, which needs network)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path_or_id, trust_remote_code=trust_remote_code)
