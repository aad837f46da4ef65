"""TeacherConfig validation, the sampling fields both clients send, and the recipe's teacher_generation block."""
from __future__ import annotations

import pytest

from lib.paths import PROJECT_ROOT
from lib.teacher.config import TeacherConfig, TeacherConfigError, sampling_params, teacher_settings
from tests.teacher.fakes import config_for


@pytest.mark.parametrize("overrides, field", [
    ({"base_url": ""}, "base_url"),
    ({"gguf_path": "x.gguf"}, "base_url"),
    ({"base_url": "localhost:8000/v1"}, "base_url"),
    ({"base_url": "http://h/v1/chat/completions"}, "base_url"),
    ({"model": ""}, "model"),
    ({"api_key_env": "sk-live-abc"}, "api_key_env"),
    ({"temperature": -0.1}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"concurrency": 0}, "concurrency"),
    ({"max_retries": -1}, "max_retries"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"backoff_max_s": 0.5}, "backoff_max_s"),
    ({"seed": 1.5}, "seed"),
    ({"extra_body": {"stream": True}}, "extra_body"),
])
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(TeacherConfigError, match=rf"^TeacherConfig\.{field}: "):
        config_for("http://127.0.0.1:1/v1", **overrides)


def test_config_error_never_echoes_a_key_put_in_api_key_env():
    with pytest.raises(TeacherConfigError) as err:
        config_for("http://127.0.0.1:1/v1", api_key_env="sk-live-0123456789")
    assert "sk-live" not in str(err.value)


def test_gguf_config_needs_an_existing_file_and_names_the_model_after_it(tmp_path):
    with pytest.raises(TeacherConfigError, match=r"^TeacherConfig\.gguf_path: "):
        TeacherConfig(gguf_path=str(tmp_path / "missing.gguf"))
    (tmp_path / "tiny-Q8_0.gguf").write_bytes(b"GGUF")
    assert TeacherConfig(gguf_path=str(tmp_path / "tiny-Q8_0.gguf")).served_model == "tiny-Q8_0"


def test_sampling_params_add_the_seed_when_set_and_let_extra_body_override():
    config = config_for("http://127.0.0.1:1/v1")
    assert sampling_params(config) == {"temperature": 0.6, "top_p": 0.95, "max_tokens": 64}
    config = config_for("http://127.0.0.1:1/v1", seed=3, extra_body={"top_k": 20, "temperature": 1.0})
    assert sampling_params(config) == {"temperature": 1.0, "top_p": 0.95, "max_tokens": 64, "seed": 3, "top_k": 20}


def test_teacher_settings_split_the_block_into_prompts_output_and_a_validated_teacher():
    settings = teacher_settings({"prompts": "data/gsm8k/train.jsonl.gz", "output": "runs/x/teacher.jsonl",
                                 "rows": 5, "base_url": "http://127.0.0.1:8000/v1", "model": "r1",
                                 "max_tokens": 512})
    assert (settings.prompts, settings.output, settings.prompts_format, settings.rows) == \
        ("data/gsm8k/train.jsonl.gz", "runs/x/teacher.jsonl", "auto", 5)
    assert settings.teacher == TeacherConfig(base_url="http://127.0.0.1:8000/v1", model="r1", max_tokens=512)
    assert settings.kept_path == PROJECT_ROOT / "runs/x/teacher.kept.jsonl"


@pytest.mark.parametrize("block, error, message", [
    ({"output": "o.jsonl"}, ValueError, "missing prompts"),
    ({"prompts": "p", "output": "o", "model": "m", "base_url": "http://h/v1", "api_key": "sk-x"}, ValueError,
     "api_key is never written in a recipe"),
    ({"prompts": "p", "output": "o", "model": "m", "base_url": "ftp://x"}, TeacherConfigError,
     r"^TeacherConfig\.base_url"),
    ({"prompts": "p", "output": "o", "model": "m", "base_url": "http://h/v1", "temprature": 0.5}, TypeError,
     "temprature"),
])
def test_teacher_settings_errors_name_the_field(block, error, message):
    with pytest.raises(error, match=message):
        teacher_settings(block)
