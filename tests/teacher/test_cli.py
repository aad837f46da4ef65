"""`python -m lib teacher generate`: `main` with a Namespace, a fake prompt reader and the scripted server."""
from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

import lib.teacher.cli as cli
from lib.recipe import load_recipe
from lib.rejects import ANSWER_MISMATCH, Reject
from tests.teacher.fakes import closed_port, last_number_matches, prompt


def _with_block(monkeypatch, block: dict | None) -> None:
    """`load_recipe` as the CLI sees it: a shipped recipe, with `block` as its teacher_generation."""
    recipe = load_recipe("smollm2_135m")
    if block is not None:
        recipe = dataclasses.replace(recipe, teacher_generation=block)
    monkeypatch.setattr(cli, "load_recipe", lambda name: recipe)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_generate_writes_traces_and_the_kept_file_and_prints_one_json_line(fake_teacher, tmp_path, monkeypatch,
                                                                           capsys):
    teacher = fake_teacher()
    teacher.replies["question 1"] = {"content": "<think>hmm</think>The answer is 5."}
    out = tmp_path / "teacher.jsonl"
    _with_block(monkeypatch, {"prompts": "data/somewhere.jsonl", "output": str(out), "prompts_format": "gsm8k",
                              "rows": 5, "base_url": teacher.base_url, "model": "fake-teacher", "concurrency": 2})
    asked = []

    def read_prompts(path, prompts_format, limit):
        asked.append((path, prompts_format, limit))
        return [prompt(i) for i in range(limit)], [Reject(line=9, id="x-9", reason="empty prompt")]

    assert cli.main(_args("--recipe", "smollm2_135m", "--rows", "3"), read_prompts, last_number_matches) == 0
    assert asked == [("data/somewhere.jsonl", "gsm8k", 3)]  # --rows wins over the block's rows
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert (summary["recipe"], summary["teacher"], summary["requested"], summary["generated"], summary["kept"]) == \
        ("smollm2_135m", "fake-teacher", 3, 3, 2)
    assert summary["rejected"] == summary["rejected_total"] == {ANSWER_MISMATCH: 1}
    assert summary["prompt_rejects"] == {"empty prompt": 1} and summary["kept_total"] == 2
    kept_file = tmp_path / "teacher.kept.jsonl"
    assert summary["kept_file"] == str(kept_file)
    kept = [json.loads(line) for line in kept_file.read_text().splitlines()]
    assert [row["id"] for row in kept] == ["p0", "p2"]
    assert kept[0]["messages"][-1] == {"role": "assistant", "reasoning_content": "Let me work out: question 0",
                                       "content": "The answer is 4."}


def test_failed_requests_exit_1_so_a_script_knows_to_run_again(tmp_path, monkeypatch, capsys):
    _with_block(monkeypatch, {"prompts": "p.jsonl", "output": str(tmp_path / "t.jsonl"), "max_retries": 0,
                              "base_url": f"http://127.0.0.1:{closed_port()}/v1", "model": "m"})
    code = cli.main(_args("--recipe", "smollm2_135m"), lambda *a, **k: ([prompt(0)], []), None)
    assert code == 1 and json.loads(capsys.readouterr().out)["failed"] == 1


@pytest.mark.parametrize("block, argv, message", [
    (None, (), "has no teacher_generation block"),
    ({"prompts": "p", "output": "o", "model": "m", "base_url": "ftp://x"}, (),
     "teacher_generation: TeacherConfig.base_url: 'ftp://x' is not an http(s) URL"),
    ({"prompts": "p", "output": "o"}, (), "teacher_generation: TeacherConfig.base_url: set exactly one"),
    ({"prompts": "p", "output": "o", "model": "m", "base_url": "http://h/v1"}, ("--rows", "-1"), "rows: -1"),
])
def test_config_problems_are_one_line_errors_with_exit_2(block, argv, message, monkeypatch, capsys):
    _with_block(monkeypatch, block)
    code = cli.main(_args("--recipe", "smollm2_135m", *argv), lambda *a, **k: pytest.fail("no prompt is read"),
                    None)
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith("error: ") and message in captured.err and captured.err.count("\n") == 1


def test_an_unknown_recipe_and_an_unreadable_prompts_file_exit_2(tmp_path, monkeypatch, capsys):
    assert cli.main(_args("--recipe", "no_such_recipe"), lambda *a, **k: ([], []), None) == 2
    assert "unknown recipe 'no_such_recipe'" in capsys.readouterr().err

    _with_block(monkeypatch, {"prompts": str(tmp_path / "missing.jsonl"), "output": str(tmp_path / "t.jsonl"),
                              "model": "m", "base_url": "http://127.0.0.1:1/v1"})

    def read_prompts(path, prompts_format, limit):
        raise FileNotFoundError(f"no such file: {path}")

    assert cli.main(_args("--recipe", "smollm2_135m"), read_prompts, None) == 2
    assert "missing.jsonl" in capsys.readouterr().err
