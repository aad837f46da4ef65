"""Check a chat template against conversations: what the response-only mask would train, one JSON line each.

Usage: ``python -m lib mask check --tokenizer DIR --conversations convs.jsonl [--last-turn-only]``

Each input line is ``{"id": ..., "messages": [{"role": ..., "content": ...}, ...]}`` (`id` optional: the line
number stands in). Each output line is ``{"id", "n_tokens", "n_trained", "trained_text"}``, plus
``"untrained_turns"`` when the template rewrites an earlier reply (Qwen3). Lines stream out as they are masked,
and the check stops at the first problem with one line on stderr:

* exit 1, ``FILE:LINE: <reason>``: a conversation the template cannot mask faithfully (`MaskingError`) or
  refuses (`raise_exception`), a line that is not JSON or not a conversation. The lines printed before it are
  valid results;
* exit 2, ``error: <reason>``: the set-up is wrong: tokenizer folder missing or unloadable, `--chat-template`
  file missing or not compiling, `--template-kwargs` not a JSON object, conversations file missing.

Stopping rather than skipping is deliberate: one refused conversation usually means the template, not the row,
needs fixing, and a check that scrolls past it hides that.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from jinja2 import TemplateError, TemplateSyntaxError

from lib.data.check import data_check
from lib.jsonl import NOT_AN_OBJECT, SourceError, jsonl_records
from lib.masking.lengths import LengthAudit, length_summary
from lib.masking.masker import mask_all
from lib.masking.templates import MaskingError, build_masked_example, end_of_turn_tokens, trained_text
from lib.models import load_fixture_tokenizer, load_model_tokenizer
from lib.recipe import load_recipe

# Files a Hugging Face tokenizer folder is loaded from; a folder with none of them is not a tokenizer folder.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")

# apply_chat_template's own arguments: the masker decides them (a template variable must not collide with them)
RESERVED_TEMPLATE_ARGUMENTS = {"add_generation_prompt", "tokenize", "continue_final_message", "return_dict",
                               "chat_template", "tools", "documents", "return_assistant_tokens_mask", "messages",
                               "conversation", "padding", "truncation", "max_length", "return_tensors"}

EXIT_UNMASKABLE = 1  # the conversations: a row the template cannot handle, or a malformed line
EXIT_SETUP = 2  # the command: tokenizer, template file, kwargs or input file (argparse also exits 2 on usage)


class CheckFailed(Exception):
    """Stops the check; the message is the one line for stderr and `exit_code` says which kind of problem."""

    def __init__(self, message: str, exit_code: int = EXIT_UNMASKABLE):
        super().__init__(one_line(message))
        self.exit_code = exit_code


def one_line(text: str) -> str:
    """`text` with line breaks turned into spaces: stderr gets exactly one line per failure."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def parse_template_kwargs(text: str | None) -> dict:
    """The `--template-kwargs` JSON object (e.g. ``{"date_string": "26 Jul 2024"}``); empty when not given."""
    if not text:
        return {}
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckFailed(f"--template-kwargs is not valid JSON: {err.msg} at column {err.colno}", EXIT_SETUP)
    if not isinstance(kwargs, dict):
        raise CheckFailed(f"--template-kwargs must be a JSON object, not a {type(kwargs).__name__}", EXIT_SETUP)
    reserved = sorted(set(kwargs) & RESERVED_TEMPLATE_ARGUMENTS)
    if reserved:
        raise CheckFailed(f"--template-kwargs may not set {', '.join(reserved)}: the masker sets those itself",
                          EXIT_SETUP)
    return kwargs


def load_checked_tokenizer(directory: str | Path, chat_template_path: str | Path | None = None):
    """The tokenizer in local folder `directory`, its chat template replaced by the text of `chat_template_path`.

    Only a local folder: a path that does not exist is an error here, never a hub id to download.
    """
    folder = Path(directory)
    template = None
    if chat_template_path is not None:  # checked first: it costs nothing, a tokenizer load costs seconds
        if not Path(chat_template_path).is_file():
            raise CheckFailed(f"chat template file not found: {chat_template_path}", EXIT_SETUP)
        template = Path(chat_template_path).read_text(encoding="utf-8")
    if not folder.is_dir():
        raise CheckFailed(f"tokenizer folder not found: {folder}", EXIT_SETUP)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise CheckFailed(f"{folder} is not a tokenizer folder: it has none of {', '.join(TOKENIZER_FILES)}",
                          EXIT_SETUP)

    try:
        tokenizer = load_model_tokenizer(str(folder))
    except Exception as err:  # transformers raises many types (OSError, ValueError, KeyError …) for broken folders
        raise CheckFailed(f"cannot load a tokenizer from {folder}: {type(err).__name__}: {err}", EXIT_SETUP) from err
    if template is not None:
        tokenizer.chat_template = template
    if not getattr(tokenizer, "chat_template", None):
        raise CheckFailed(f"{folder} has no chat template; pass one with --chat-template FILE.jinja", EXIT_SETUP)
    return tokenizer


def read_conversations(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) for each non-blank line, lazily; a line that is not a conversation stops with FILE:LINE.

    A row without `id` gets its line number, so every output line and error can be traced back to the file. A
    missing file is reported at once (before a caller loads a tokenizer for seconds), not at the first row.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckFailed(f"conversations file not found: {path}", EXIT_SETUP)
    return _conversation_rows(path)


def _conversation_rows(path: Path) -> Iterator[tuple[int, dict]]:
    for line, row in jsonl_records(path):
        if isinstance(row, SourceError):  # stop at the first line that is not a JSON object, naming it
            detail = f"{row.reason} but {row.detail}" if row.reason == NOT_AN_OBJECT else str(row)
            raise CheckFailed(f"{path}:{line}: {detail}")
        problem = conversation_problem(row)
        if problem:
            raise CheckFailed(f"{path}:{line}: {problem}")
        yield line, {**row, "id": line if row.get("id") is None else row["id"]}


def conversation_problem(row: dict) -> str:
    """Why `row` is not ``{"messages": [{"role": str, "content": str}, ...]}``, or "" when it is."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return "no 'messages' list (expected {\"id\": ..., \"messages\": [{\"role\": ..., \"content\": ...}]})"
    for i, message in enumerate(messages):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            return f"message {i} is not a {{\"role\": str, \"content\": str}} object"
    return ""


def mask_summary(row_id, example, tokenizer) -> dict:
    """The output line for one masked conversation: sizes and exactly what the loss trains."""
    summary = {"id": row_id, "n_tokens": len(example.input_ids), "n_trained": example.n_trained,
               "trained_text": trained_text(example, tokenizer)}
    if example.untrained_turns:
        summary["untrained_turns"] = example.untrained_turns
    return summary


def check_conversations(rows: Iterable[tuple[int, dict]], tokenizer, assistant_turns: str = "all",
                        template_kwargs: dict | None = None, source: str = "conversations") -> Iterator[dict]:
    """Mask each `(line, row)` and yield its summary; the first refusal stops with ``SOURCE:LINE: reason``.

    A refusal is a `MaskingError`, or the template itself failing on the row (`raise_exception`, e.g. Mistral's
    "roles must alternate"). A template that does not compile stops as a set-up error: no row can pass it.
    """
    for line, row in rows:
        try:
            example = build_masked_example(row["messages"], tokenizer, template_kwargs, assistant_turns,
                                           str(row["id"]))
        except MaskingError as err:
            raise CheckFailed(f"{source}:{line}: {err}") from err
        except TemplateSyntaxError as err:
            raise CheckFailed(f"the chat template does not compile: {err.message} (template line {err.lineno})",
                              EXIT_SETUP) from err
        except TemplateError as err:
            raise CheckFailed(f"{source}:{line}: sample {row['id']}: the chat template refused it: {err}") from err
        yield mask_summary(row["id"], example, tokenizer)


def run_mask_check(tokenizer_dir: str, conversations: str, chat_template: str | None = None,
                   last_turn_only: bool = False, template_kwargs: str | None = None, out=None, err=None) -> int:
    """`python -m lib mask check`: print one JSON line per conversation; return the exit code (see module doc)."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        kwargs = parse_template_kwargs(template_kwargs)
        rows = read_conversations(conversations)  # a missing file fails here, before the slow tokenizer load
        tokenizer = load_checked_tokenizer(tokenizer_dir, chat_template)
        turns = "last" if last_turn_only else "all"
        for summary in check_conversations(rows, tokenizer, turns, kwargs, source=str(conversations)):
            out.write(json.dumps(summary, ensure_ascii=False) + "\n")
    except CheckFailed as failure:
        out.flush()  # the results before the failing line come out first
        prefix = "error: " if failure.exit_code == EXIT_SETUP else ""
        err.write(f"{prefix}{failure}\n")
        return failure.exit_code
    return 0


def data_check_report(path: str, recipe_name: str = "", dataset_format: str = "", split: str = "train",
                      config: str = "", rejects_path: str = "", verify_answers: bool = True) -> dict:
    """What `data check` prints: the data stage's audit of a file and, with a recipe, every kept example's token
    length as that recipe masks it (its fixture tokenizer and template) and what its max_length would cut. Rows
    the template cannot mask are rejects of the report like any other (counted in its reject fraction)."""
    recipe = load_recipe(recipe_name) if recipe_name else None
    if recipe is None:
        report = data_check(path, None, dataset_format, split, config, rejects_path, verify_answers)
        return report.as_dict() | {"recipe": None, "lengths": None,
                                   "note": "pass --recipe R for token lengths with R's tokenizer and chat template"}
    tokenizer = load_fixture_tokenizer(recipe.tokenizer_fixture)
    audit = LengthAudit(lambda rows: mask_all(rows, tokenizer, recipe), end_of_turn_tokens(tokenizer),
                        keep_examples=False)
    report = data_check(path, recipe, dataset_format, split, config, rejects_path, verify_answers, on_kept=audit.add)
    audit.finish()
    for reject in audit.rejects:  # kept by the data stage, refused by the template
        report.add_reject(reject)
        report.kept -= 1
    if rejects_path and audit.rejects:
        with open(rejects_path, "a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r.__dict__, ensure_ascii=False) + "\n" for r in audit.rejects)
    lengths = length_summary(audit.lengths(), recipe.max_length)
    return report.as_dict() | {
        "recipe": recipe.name, "lengths": lengths, "overlong_policy": recipe.overlong_policy,
        "would_truncate": lengths["over_max_length"],
        "tokenizer": f"fixtures/tokenizers/{recipe.tokenizer_fixture} ({recipe.chat_format} format)"}


def run_data_check(args) -> int:
    """`python -m lib data check`: print `data_check_report` as one JSON line; exit 2 with one line on a set-up
    error (file, recipe, format)."""
    try:
        report = data_check_report(args.path, args.recipe or "", args.format or "", args.split, args.config or "",
                                   args.rejects or "", not args.no_verify)
    except (OSError, ValueError, ImportError) as err:
        message = str(err) if str(args.path) in str(err) else f"{args.path}: {err}"
        print(f"error: {message}".splitlines()[0], file=sys.stderr)
        return EXIT_SETUP
    print(json.dumps(report, ensure_ascii=False, default=str))
    return 0
