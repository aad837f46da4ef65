"""Teacher settings: where the teacher lives, how to sample it, and the recipe block that names the prompts.

Usage: ``config = TeacherConfig(base_url="http://127.0.0.1:8000/v1", model="r1")``;
``settings = teacher_settings(recipe.teacher_generation)``  (ValueError / TeacherConfigError name the field)

Validation is pure and runs on construction, so a dry-run or a recipe check catches a wrong field before any
request is sent or any GGUF is loaded.
"""
from __future__ import annotations

import math
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from lib.paths import project_path

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class TeacherConfigError(ValueError):
    """A `TeacherConfig` field is wrong; the message starts with the field's name."""


@dataclass(frozen=True)
class TeacherConfig:
    """Where the teacher lives and how to sample it: exactly one of `base_url` or `gguf_path`.

    The API key is never a field (so never in a repr or a saved config): `api_key_env` names the
    environment variable holding it; an unset variable sends no Authorization header (local servers).
    """

    base_url: str = ""  # OpenAI-compatible root, e.g. "http://127.0.0.1:8000/v1" (without /chat/completions)
    gguf_path: str = ""  # or a local GGUF, run in this process by llama-cpp-python
    model: str = ""  # the served model name (required with base_url); a GGUF defaults to its file stem
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.6  # R1-family recommendation: greedy decoding loops inside long thoughts
    top_p: float = 0.95
    max_tokens: int = 4096  # room for a whole thought: a cut trace is rejected, never kept truncated
    concurrency: int = 4  # requests in flight; more than the server batches only queues there
    max_retries: int = 5  # retries after the first attempt (connection errors, timeouts, 408, 429, 5xx)
    timeout_s: float = 600.0  # per request: a long thought on a busy server takes minutes
    backoff_base_s: float = 1.0  # first retry waits 0.5-1 s, doubling each time (equal jitter)
    backoff_max_s: float = 60.0  # cap of the exponential backoff
    retry_after_max_s: float = 600.0  # a server's Retry-After is obeyed up to this
    seed: int | None = None  # sampling seed, when the server honours one
    extra_body: dict = field(default_factory=dict)  # server-specific request fields (top_k, chat_template_kwargs…)
    n_ctx: int = 4096  # GGUF only: prompt + max_tokens must fit
    n_threads: int = 0  # GGUF only: 0 lets llama.cpp choose

    def __post_init__(self):
        problems = config_problems(self)
        if problems:
            name, problem = problems[0]
            raise TeacherConfigError(f"TeacherConfig.{name}: {problem}")

    @property
    def served_model(self) -> str:
        """The model name written into records (`model`, or the GGUF's file stem)."""
        return self.model or Path(self.gguf_path).stem


def config_problems(config: TeacherConfig) -> list[tuple[str, str]]:
    """(field, problem) pairs, first problem first; empty when the config is usable (pure)."""
    problems = []
    if bool(config.base_url) == bool(config.gguf_path):
        problems.append(("base_url", "set exactly one of base_url (an OpenAI-compatible endpoint) "
                                     "or gguf_path (a local GGUF)"))
    if config.base_url:
        parts = urllib.parse.urlsplit(config.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems.append(("base_url", f"{config.base_url!r} is not an http(s) URL"))
        elif parts.path.rstrip("/").endswith("/chat/completions"):
            problems.append(("base_url", "give the API root (…/v1), not the /chat/completions endpoint"))
        if not config.model:
            problems.append(("model", "required with base_url: the name the server serves the teacher under"))
    if config.gguf_path and not Path(config.gguf_path).is_file():
        problems.append(("gguf_path", f"{config.gguf_path!r} is not a file"))
    if not isinstance(config.api_key_env, str) or not _ENV_NAME.fullmatch(config.api_key_env):
        # The value is not echoed: a user who put the key itself here must not see it printed back.
        problems.append(("api_key_env", "must name an environment variable (letters, digits, _), "
                                        "not hold the key itself"))
    checks = [
        ("temperature", _is_number(config.temperature) and config.temperature >= 0, "must be >= 0"),
        ("top_p", _is_number(config.top_p) and 0 < config.top_p <= 1, "must be in (0, 1]"),
        ("max_tokens", _is_int(config.max_tokens) and config.max_tokens >= 1, "must be an integer >= 1"),
        ("concurrency", _is_int(config.concurrency) and config.concurrency >= 1, "must be an integer >= 1"),
        ("max_retries", _is_int(config.max_retries) and config.max_retries >= 0, "must be an integer >= 0"),
        ("timeout_s", _is_number(config.timeout_s) and config.timeout_s > 0, "must be > 0"),
        ("backoff_base_s", _is_number(config.backoff_base_s) and config.backoff_base_s >= 0, "must be >= 0"),
        ("backoff_max_s", _is_number(config.backoff_max_s) and config.backoff_max_s >= config.backoff_base_s,
         "must be >= backoff_base_s"),
        ("retry_after_max_s", _is_number(config.retry_after_max_s) and config.retry_after_max_s >= 0,
         "must be >= 0"),
        ("seed", config.seed is None or _is_int(config.seed), "must be an integer or None"),
        ("n_ctx", _is_int(config.n_ctx) and config.n_ctx >= 1, "must be an integer >= 1"),
        ("n_threads", _is_int(config.n_threads) and config.n_threads >= 0, "must be an integer >= 0"),
    ]
    problems += [(name, f"{problem}, got {getattr(config, name)!r}") for name, ok, problem in checks if not ok]
    if not isinstance(config.extra_body, dict):
        problems.append(("extra_body", "must be a dict of extra request fields"))
    elif {"messages", "stream"} & set(config.extra_body):
        problems.append(("extra_body", "may not set 'messages' or 'stream' (this package owns them)"))
    return problems


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def sampling_params(config: TeacherConfig) -> dict:
    """The sampling fields of one chat-completions request, `extra_body` last so a server-specific field can
    override a default (pure). Both clients send exactly these, so an HTTP teacher and a GGUF sample alike."""
    params = {"temperature": config.temperature, "top_p": config.top_p, "max_tokens": config.max_tokens}
    if config.seed is not None:
        params["seed"] = config.seed
    return {**params, **config.extra_body}


# ------------------------------------------------------------------------------------- the recipe block


@dataclass(frozen=True)
class TeacherSettings:
    """The recipe's `teacher_generation` block: which prompts, where the traces go, and the teacher itself."""

    prompts: str  # a source with reference answers, any schema (e.g. data/gsm8k/train.jsonl.gz)
    output: str  # append-only traces JSONL (resumable); kept traces go to <output stem>.kept.jsonl
    prompts_format: str
    rows: int  # 0 = all prompts
    teacher: TeacherConfig

    @property
    def kept_path(self) -> Path:
        out = project_path(self.output)
        return out.with_name(out.name.removesuffix(".jsonl") + ".kept.jsonl")


def teacher_settings(block: dict) -> TeacherSettings:
    """Validate a `teacher_generation` block; errors name the missing or wrong field."""
    settings = dict(block)
    missing = [key for key in ("prompts", "output") if not settings.get(key)]
    if missing:
        raise ValueError(f"missing {', '.join(missing)} (prompts: a file with reference answers; output: the "
                         "traces JSONL)")
    if "api_key" in settings:
        raise ValueError("api_key is never written in a recipe: set api_key_env to the name of the environment "
                         "variable that holds it")
    prompts, output = settings.pop("prompts"), settings.pop("output")
    prompts_format, rows = settings.pop("prompts_format", "auto"), settings.pop("rows", 0)
    return TeacherSettings(prompts, output, prompts_format, rows, TeacherConfig(**settings))
