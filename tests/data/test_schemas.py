"""lib.data.schemas: every schema's real layout becomes the canonical example, or a Reject with a stable reason."""
from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib.data import schemas as data_schemas
from lib.data.schemas import (
    DETECTION_KEYS, EMPTY_PROMPT, MISSING_MAPPED_COLUMN, NO_CORRECT_GENERATION, NOT_ONE_THOUGHT_SOLUTION, SCHEMA_FIELDS, SCHEMA_MISMATCH, SCHEMA_OPTIONAL_FIELDS, SCHEMAS, UNCLOSED_SOLUTION, UNCLOSED_THOUGHT, UNEQUAL_LISTS, UNKNOWN_SCHEMA, apply_field_mapping, check_schema, convert_row, convert_rows, detect_schema, last_boxed, short_reference, split_reasoning,
)
from lib.rejects import RejectError
from lib.think import EMPTY_ANSWER, EMPTY_THINK, NOT_ONE_THINK_BLOCK, TAG_INSIDE, THINK_NOT_FIRST, UNCLOSED_THINK
from lib.data.sources import iter_records
from lib.jsonl import INVALID_UTF8, MALFORMED_JSON, SourceError
from lib.paths import PROJECT_ROOT
from lib.conversation import to_chat_messages
from lib.data.rows import read_reasoning_rows
from lib.rejects import Reject
from lib.think import THINK_CLOSE, THINK_OPEN

FIXTURES = PROJECT_ROOT / "tests" / "fixtures" / "data"


def _convert(name: str, **kwargs):
    """(converted stream, {row number: [ids] or reason}) for a fixture file."""
    converted = convert_rows(iter_records(FIXTURES / name), **kwargs)
    outcome = {n: item.reason if isinstance(item, Reject) else [r["id"] for r in item if isinstance(r, dict)]
               for n, item in converted}
    return converted, outcome


def _rows(name: str, **kwargs) -> list[dict]:
    return [row for _, item in convert_rows(iter_records(FIXTURES / name), **kwargs)
            if not isinstance(item, Reject) for row in item if isinstance(row, dict)]


def _reply(example: dict) -> dict:
    return example["messages"][-1]


# --- every fixture: detection, kept rows, reject reasons --------------------------------------------------------

UUID_A, UUID_C, UUID_E = ("2f6c1a8e-7b1d-5d0e-9a43-1c2b3d4e5f60", "5d1c0f3a-2e9b-5b7c-8f60-0a1b2c3d4e5f",
                          "e7f6d5c4-b3a2-5918-8f7e-6d5c4b3a2918")
OPENR1_OUTCOME = {1: [f"{UUID_A}-g0", f"{UUID_A}-g1"], 2: NO_CORRECT_GENERATION, 3: [f"{UUID_C}-g0"],
                  4: UNEQUAL_LISTS, 5: [f"{UUID_E}-g0"], 6: NOT_ONE_THINK_BLOCK}
GSM8K_OUTCOME = {1: ["row-000001"], 2: ["row-000002"], 3: MALFORMED_JSON, 4: INVALID_UTF8,
                 5: "gsm8k answer has no '#### N' final answer", 6: "not a JSON object", 7: ["row-000007"]}
S1K_OUTCOME = {1: ["row-000001"], 2: ["row-000002"], 3: ["row-000003"],
               4: "'thinking_trajectories' must hold exactly one string"}
SHAREGPT_REASONS = [UNCLOSED_THOUGHT, NOT_ONE_THOUGHT_SOLUTION]
TRIPLET_REASONS = ["empty thinking", TAG_INSIDE]

FIXTURE_OUTCOMES = {
    "gsm8k.jsonl": ("gsm8k", GSM8K_OUTCOME),
    "gsm8k.jsonl.gz": ("gsm8k", GSM8K_OUTCOME),
    "triplets.jsonl": ("triplets", dict(zip([1, 2, 3, 4], [["row-000001"], ["row-000002"], *TRIPLET_REASONS]))),
    "triplets.csv": ("triplets", dict(zip([2, 4, 6, 7], [["row-000002"], ["row-000004"], *TRIPLET_REASONS]))),
    "messages.jsonl": ("messages", {1: ["row-000001"], 2: ["row-000002"], 3: ["row-000003"], 4: ["row-000004"],
                                    5: UNCLOSED_THINK,
                                    6: "unsupported role 'tool' (tool turns are not trained yet)"}),
    "openr1_math.jsonl": ("openr1_math", OPENR1_OUTCOME),
    "openr1_math.parquet": ("openr1_math", OPENR1_OUTCOME),
    "sharegpt.jsonl": ("sharegpt", dict(zip([1, 2, 3, 4], [["row-000001"], ["row-000002"], *SHAREGPT_REASONS]))),
    "sharegpt.csv": ("sharegpt", dict(zip([2, 3, 4, 5], [["row-000002"], ["row-000003"], *SHAREGPT_REASONS]))),
    "openthoughts_metadata.json": ("openthoughts_metadata", {1: ["row-000001"], 2: ["row-000002"], 3: EMPTY_THINK}),
    "s1k.jsonl": ("s1k", S1K_OUTCOME),
    "s1k.parquet": ("s1k", S1K_OUTCOME),
    "s1k_1_1.jsonl": ("s1k_1_1", {1: ["row-000001"], 2: ["row-000002"],
                                  3: "missing or non-string field 'deepseek_attempt'"}),
    "limo.json": ("limo", {1: ["row-000001"], 2: ["row-000002"], 3: EMPTY_THINK}),
    "r1_distill_sft.jsonl": ("r1_distill_sft", {1: ["r1sft-0001"], 2: ["r1sft-0002"], 3: NOT_ONE_THINK_BLOCK,
                                                4: UNCLOSED_THINK, 5: EMPTY_ANSWER}),
}


def test_every_fixture_file_has_an_expected_outcome():
    on_disk = {p.name for p in FIXTURES.iterdir() if p.suffix != ".py"} - {"triplets_renamed.csv"}
    assert on_disk == set(FIXTURE_OUTCOMES)
    assert set(DETECTION_KEYS) == set(SCHEMAS) == {schema for schema, _ in FIXTURE_OUTCOMES.values()}


@pytest.mark.parametrize("name", sorted(FIXTURE_OUTCOMES))
def test_fixture_is_detected_and_converted_row_by_row(name):
    schema, expected = FIXTURE_OUTCOMES[name]
    converted, outcome = _convert(name)
    assert converted.schema == schema
    assert outcome == expected  # one item per source row, in order: every row kept or rejected
    first = next(row for _, row in iter_records(FIXTURES / name) if isinstance(row, dict))
    assert detect_schema(first) == schema
    assert _convert(name, schema=schema)[1] == expected  # the named schema gives the same result


@pytest.mark.parametrize("name", sorted(FIXTURE_OUTCOMES))
def test_fixture_reject_reasons_are_categories_without_positions_or_values(name):
    rejects = [item for _, item in convert_rows(iter_records(FIXTURES / name)) if isinstance(item, Reject)]
    assert rejects
    for reject in rejects:  # no free-standing number (a column, a byte, a count) in a reason; UTF-8 is a name
        assert not re.search(r"(?<![\w-])\d+(?![\w-])", reject.reason), reject


# --- per-schema conversion --------------------------------------------------------------------------------------

def test_openr1_row_becomes_one_example_per_correct_complete_generation():
    first, second = _rows("openr1_math.parquet")[:2]
    assert first == {
        "id": f"{UUID_A}-g0",
        "messages": [{"role": "user", "content": "Find all real numbers $x$ such that $x^2 - 5x + 6 = 0$."},
                     {"role": "assistant",
                      "think": _reply(first)["think"],
                      "answer": "Factoring gives $(x-2)(x-3)=0$, so the solutions are $x = 2$ and $x = 3$.\n\n"
                                "\\boxed{2, 3}"}],
        "answer": "2, 3", "source": "openr1_math/olympiads", "domain": "math"}
    assert _reply(first)["think"].startswith("Okay, so I need to solve")
    assert second["id"] == f"{UUID_A}-g1"  # judged correct by the Llama judge only: still correct


def _openr1(generations, complete, verify, llama=None, finish=None, **extra):
    return {"problem": "p", "answer": "4", "uuid": "u", "generations": generations,
            "is_reasoning_complete": complete, "correctness_math_verify": verify, "correctness_llama": llama,
            "finish_reasons": finish, **extra}


GEN = "<think>\n2 + 2 = 4.\n</think>\n\n\\boxed{4}"


@pytest.mark.parametrize("row, ids", [
    (_openr1([GEN, GEN], [True, True], [True, False], [None, True], ["stop", "stop"]), ["u-g0", "u-g1"]),
    (_openr1([GEN, GEN], [True, True], [False, True], None, None), ["u-g1"]),
    (_openr1([GEN, GEN], [True, False], [True, True], [True, True], ["stop", "stop"]), ["u-g0"]),
    (_openr1([GEN, GEN], [True, True], [True, True], [True, True], ["length", None]), ["u-g1"]),
    (_openr1([GEN, "<think>a</think>"], [True, True], [True, True]), ["u-g0"]),  # g1: a Reject (empty answer)
    (_openr1([GEN], [True], [True], uuid=None), ["x-g0"]),
])
def test_openr1_generation_filter(row, ids):
    items = data_schemas.from_openr1_math(row, "x")
    assert [item["id"] for item in items if isinstance(item, dict)] == ids
    # every generation is accounted for: an example, or a Reject naming it
    assert sorted(item["id"] if isinstance(item, dict) else item.id for item in items) == \
        sorted(f"{items[0]['id'].rsplit('-g', 1)[0]}-g{k}" for k in range(len(row["generations"])))


def test_openr1_generations_the_dataset_grades_out_are_counted_as_removals():
    row = _openr1([GEN, GEN, GEN], [True, True, False], [True, False, True], [None, False, True],
                  ["stop", "stop", "length"])
    good, *graded = data_schemas.from_openr1_math(row, "x")
    assert good["id"] == "u-g0"
    assert [(r.id, r.reason) for r in graded] == [("u-g1", data_schemas.GRADED_OUT), ("u-g2", data_schemas.GRADED_OUT)]
    assert graded[0].detail == ("is_reasoning_complete True, correctness_math_verify False, correctness_llama False, "
                                "finish_reasons stop")


def test_a_malformed_correct_generation_beside_good_ones_is_a_counted_reject_with_the_row_line():
    row = _openr1([GEN, "<think>a</think>"], [True, True], [True, True])
    [(line, items)] = list(data_schemas.convert_rows([(7, row)], "openr1_math"))
    good, bad = items
    assert good["id"] == "u-g0"
    assert bad == Reject(7, "u-g1", "empty answer after </think>", "generation 1")


@pytest.mark.parametrize("row, reason, detail", [
    (_openr1([GEN, GEN], [False, True], [True, False], [None, False], ["length", "stop"]), NO_CORRECT_GENERATION,
     "2 generations, none both correct and complete"),
    (_openr1([], [], []), NO_CORRECT_GENERATION, "0 generations, none both correct and complete"),
    (_openr1([GEN, GEN], [True, True], [True]), UNEQUAL_LISTS,
     "generations 2, is_reasoning_complete 2, correctness_math_verify 1"),
    (_openr1([GEN], [True], [True], [True, True]), UNEQUAL_LISTS,
     "generations 1, is_reasoning_complete 1, correctness_math_verify 1, correctness_llama 2"),
    (_openr1(["<think>\nunfinished", GEN], [True, True], [True, False]), UNCLOSED_THINK, "generation 0"),
    (_openr1([GEN], "yes", [True]), "missing or non-list field 'is_reasoning_complete'", ""),
    (_openr1([7], [True], [True]), "non-string generation", "generation 0"),
])
def test_openr1_rejects(row, reason, detail):
    with pytest.raises(RejectError) as failure:
        data_schemas.from_openr1_math(row, "x")
    assert (failure.value.reason, failure.value.detail) == (reason, detail)


def test_sharegpt_thought_markers_become_think_and_answer_and_the_marker_prompt_is_dropped():
    stratos, plain = _rows("sharegpt.jsonl")
    assert [m["role"] for m in stratos["messages"]] == ["user", "assistant"]  # the marker system prompt is gone
    assert _reply(stratos)["think"].startswith("Okay, so I need the remainder")
    assert _reply(stratos)["answer"].endswith("\\boxed{2}")
    assert plain["messages"] == [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": "Is 2023 divisible by 7?"},
        {"role": "assistant", "think": "7 * 289 = 2023, since 7 * 300 = 2100 and 2100 - 77 = 2023.",
         "answer": "Yes: 2023 = 7 × 289."}]
    assert (plain["answer"], plain["source"], plain["domain"]) == (None, "sharegpt", "general")


THOUGHT = "<|begin_of_thought|>\n\nt\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\ns\n\n<|end_of_solution|>"


@pytest.mark.parametrize("text, reason", [
    (THOUGHT, None),
    ("<|begin_of_thought|>\n\nt", UNCLOSED_THOUGHT),
    ("<|begin_of_thought|>t<|end_of_thought|><|begin_of_solution|>s", UNCLOSED_SOLUTION),
    (THOUGHT + THOUGHT, NOT_ONE_THOUGHT_SOLUTION),
    ("<|begin_of_thought|>t<|end_of_thought|>\n\nthe answer", NOT_ONE_THOUGHT_SOLUTION),
    ("<|begin_of_solution|>s<|end_of_solution|><|begin_of_thought|>t<|end_of_thought|>",
     data_schemas.THOUGHT_SOLUTION_LAYOUT),
    ("Preamble. " + THOUGHT, data_schemas.THOUGHT_SOLUTION_LAYOUT),
    ("<think>t</think>a", None),
    ("<think>\nunfinished", UNCLOSED_THINK),
    ("<think>a</think><think>b</think>A", NOT_ONE_THINK_BLOCK),
    ("a</think>A", NOT_ONE_THINK_BLOCK),
    ("no think at all", NOT_ONE_THINK_BLOCK),
    ("Sure. <think>a</think>A", THINK_NOT_FIRST),
])
def test_split_reasoning(text, reason):
    if reason is None:
        assert [part.strip() for part in split_reasoning(text)] in (["t", "s"], ["t", "a"])
        return
    with pytest.raises(RejectError) as failure:
        split_reasoning(text)
    assert failure.value.reason == reason


def test_sharegpt_speakers_and_structure():
    def convert(conversations, **extra):
        return data_schemas.from_sharegpt({"conversations": conversations, **extra}, "x")[0]

    turns = [{"from": "human", "value": "a?"}, {"from": "gpt", "value": "<think>x</think>A"},
             {"from": "user", "value": "b?"}, {"from": "assistant", "value": THOUGHT}]
    example = convert(turns, system="Be brief.", source="stratos", domain="math")
    assert [m["role"] for m in example["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert (example["source"], example["domain"]) == ("sharegpt/stratos", "math")
    with pytest.raises(RejectError, match=r"^unsupported role 'function_call'"):
        convert([{"from": "human", "value": "q"}, {"from": "function_call", "value": "{}"}])
    with pytest.raises(RejectError, match=r"^missing or empty 'conversations' list$"):
        convert([])
    with pytest.raises(RejectError, match=r"^user turn content is not a string$"):
        convert([{"from": "human", "value": None}, {"from": "gpt", "value": "<think>x</think>A"}])


def test_openthoughts_metadata_appends_starter_code_and_takes_the_boxed_reference():
    math, code = _rows("openthoughts_metadata.json")
    assert math["answer"] == "25" and math["domain"] == "math" and math["source"] == "openthoughts_metadata/numina_math"
    assert code["messages"][0]["content"].endswith("lowercase string s.\n\ndef count_vowels(s):")
    assert code["answer"] is None and code["domain"] == "code"
    assert _reply(code)["answer"].startswith("```python\ndef count_vowels(s):")


def test_s1k_references_come_from_short_or_boxed_solutions_only():
    aime, numina, physics = _rows("s1k.parquet")
    assert (aime["answer"], numina["answer"], physics["answer"]) == ("3", "\\frac{1}{4}", None)
    assert (aime["domain"], physics["domain"]) == ("math", "science")
    assert aime["source"] == "s1k/qq8933/AIME_1983_2024"
    assert _reply(aime)["think"].startswith("Powers of 3 modulo 13")
    assert _reply(aime)["answer"].endswith("The remainder is $3$.")
    units, books = _rows("s1k_1_1.jsonl")
    assert _reply(units)["think"].startswith("Okay, so units digits")  # the DeepSeek trace, not Gemini's
    assert (units["answer"], books["answer"]) == ("7", "6")


def test_limo_solution_is_the_think_and_the_answer_is_one_boxed_sentence():
    first = _rows("limo.json")[0]
    assert _reply(first)["think"].startswith("Okay, so I need to count integers from 1 to 99")
    assert _reply(first)["answer"] == "The final answer is $\\boxed{46}$."
    assert first["answer"] == "46"
    assert data_schemas.from_limo({"question": "q", "solution": "s", "answer": 12}, "x")[0]["answer"] == "12"
    with pytest.raises(RejectError, match="^missing or empty field 'answer'$"):
        data_schemas.from_limo({"question": "q", "solution": "s", "answer": " "}, "x")


def test_r1_distill_sft_uses_its_own_ids_and_the_last_box_of_the_solution():
    boxed, proof = _rows("r1_distill_sft.jsonl")
    assert (boxed["id"], boxed["answer"], proof["answer"]) == ("r1sft-0001", "5", None)
    assert _reply(boxed) == {"role": "assistant", "think": "Subtract 5 from both sides: 3x = 15. Divide by 3: x = 5. "
                                                           "Check: 3 * 5 + 5 = 20.",
                             "answer": "Subtracting 5 gives $3x = 15$, so $x = \\boxed{5}$."}
    assert boxed["source"] == "r1_distill_sft/numina_math"


@pytest.mark.parametrize("text, boxed", [
    ("so $\\boxed{5}$.", "5"),
    ("first \\boxed{1}, then \\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not close the box
    ("\\boxed {x=2 \\text{ or } x=3}", "x=2 \\text{ or } x=3"),
    ("\\boxed{2} and finally \\boxed{3", None),  # the last box never closes: no answer, not the earlier one
    ("\\boxed{}", None),
    ("no box", None),
    (None, None),
])
def test_last_boxed(text, boxed):
    assert last_boxed(text) == boxed


@pytest.mark.parametrize("solution, reference", [
    ("204", "204"), ("  \\frac{1}{2} ", "\\frac{1}{2}"), ("Long derivation ... so $\\boxed{7}$.", "7"),
    ("x" * 41, None), ("a\nb", None), ("", None), (None, None),
])
def test_short_reference(solution, reference):
    assert short_reference(solution) == reference


# --- reject reasons, one test each -------------------------------------------------------------------------------

@pytest.mark.parametrize("schema, row, reason", [
    ("triplets", {"problem": "p", "thinking": 3, "solution": "s"}, "missing or non-string field 'thinking'"),
    ("openthoughts_metadata", {"problem": "p", "deepseek_solution": "s"},
     "missing or non-string field 'deepseek_reasoning'"),
    ("r1_distill_sft", {"problem": None, "reannotated_assistant_content": "<think>t</think>a"},
     "missing or non-string field 'problem'"),
    ("s1k", {"question": "q", "thinking_trajectories": "t", "attempt": "a"},
     "missing or non-list field 'thinking_trajectories'"),
    ("s1k", {"question": "q", "thinking_trajectories": [" "], "attempt": "a"}, EMPTY_THINK),
    ("s1k_1_1", {"question": "q", "deepseek_thinking_trajectory": "\n", "deepseek_attempt": "a"}, EMPTY_THINK),
    ("messages", {"messages": [{"role": "user", "content": "q"},
                               {"role": "assistant", "content": "<think> </think>A"}]}, EMPTY_THINK),
    ("r1_distill_sft", {"problem": "p", "reannotated_assistant_content": "<think>\nstill thinking"}, UNCLOSED_THINK),
    ("sharegpt", {"conversations": [{"from": "human", "value": "q"},
                                    {"from": "gpt", "value": "<think>a</think>\n<think>b</think>A"}]},
     NOT_ONE_THINK_BLOCK),
    ("openthoughts_metadata", {"problem": "p", "deepseek_reasoning": "r", "deepseek_solution": " \n"}, EMPTY_ANSWER),
    ("r1_distill_sft", {"problem": "p", "reannotated_assistant_content": "<think>t</think>\n\n"}, EMPTY_ANSWER),
    ("s1k_1_1", {"question": "q", "deepseek_thinking_trajectory": "<think>t</think>", "deepseek_attempt": "a"},
     TAG_INSIDE),
    ("limo", {"question": "q", "solution": "s </think> more", "answer": "1"}, TAG_INSIDE),
    ("limo", {"question": " \n", "solution": "s", "answer": "1"}, EMPTY_PROMPT),
    ("openr1_math", {"problem": "", "generations": [], "is_reasoning_complete": [], "correctness_math_verify": []},
     EMPTY_PROMPT),
])
def test_reject_reasons(schema, row, reason):
    [(line, reject)] = convert_rows([(9, row)], schema, id_prefix="t")
    assert line == 9 and isinstance(reject, Reject)
    assert (reject.line, reject.id, reject.reason) == (9, "t-000009", reason)


def test_source_level_errors_become_rejects_with_the_same_reason_and_detail():
    errors = [(1, SourceError(INVALID_UTF8, "invalid start byte at byte 7")),
              (2, SourceError(MALFORMED_JSON, "Expecting value at column 15"))]
    assert list(convert_rows(errors, id_prefix="f")) == [
        (1, Reject(1, "f-000001", INVALID_UTF8, "invalid start byte at byte 7")),
        (2, Reject(2, "f-000002", MALFORMED_JSON, "Expecting value at column 15"))]


# --- detection, fixing the schema, field mapping ------------------------------------------------------------------

def test_detection_prefers_the_most_specific_schema():
    openr1 = json.loads((FIXTURES / "openr1_math.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert "messages" in openr1 and detect_schema(openr1) == "openr1_math"
    assert detect_schema({"id": 1, "problem": "p", "messages": [], "reannotated_assistant_content": "c",
                          "solution": "s"}) == "r1_distill_sft"
    assert detect_schema({"question": "q", "solution": "s", "answer": "a"}) == "limo"
    assert detect_schema({"question": "q", "answer": "a"}) == "gsm8k"
    assert detect_schema({"problem": "p", "thinking": "t", "solution": "s"}) == "triplets"


def test_detection_failure_lists_the_known_schemas_and_the_row_keys():
    with pytest.raises(RejectError) as failure:
        detect_schema({"prompt": "p", "response": "r"})
    assert failure.value.reason == UNKNOWN_SCHEMA
    assert "row keys: prompt, response" in failure.value.detail
    assert all(schema in failure.value.detail for schema in SCHEMAS)


def test_the_schema_is_fixed_by_the_first_row_that_fits_one():
    gsm8k = {"question": "q", "answer": "r\n#### 1"}
    sharegpt = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "<think>t</think>a"}]}
    converted = convert_rows(enumerate([{"prompt": "?"}, gsm8k, sharegpt, gsm8k], start=1), id_prefix="m")
    items = list(converted)
    assert converted.schema == "gsm8k"
    assert [(n, item.reason if isinstance(item, Reject) else len(item)) for n, item in items] == [
        (1, UNKNOWN_SCHEMA), (2, 1), (3, SCHEMA_MISMATCH), (4, 1)]
    assert items[2][1].detail == "a sharegpt row in a gsm8k source"


def test_own_ids_are_kept_and_missing_ones_are_positional():
    rows = [(1, {"id": "own", "question": "q", "answer": "r\n#### 1"}), (2, {"id": None, "question": "q",
                                                                          "answer": "r\n#### 2"})]
    assert [item[0]["id"] for _, item in convert_rows(rows, id_prefix="g")] == ["own", "g-000002"]


def test_field_mapping_reads_renamed_columns():
    mapping = {"problem": "prompt", "thinking": "cot", "solution": "response"}
    assert _convert("triplets_renamed.csv")[1][2] == UNKNOWN_SCHEMA  # without the mapping nothing fits
    assert _rows("triplets_renamed.csv", schema="triplets", field_mapping=mapping) == _rows("triplets.csv")
    assert apply_field_mapping({"q": "x", "a": "y"}, {"question": "q", "answer": "q"}) == {
        "q": "x", "a": "y", "question": "x", "answer": "x"}  # copied, so one column may feed two fields


def test_field_mapping_with_a_missing_column_rejects_the_row():
    [(_, reject)] = convert_rows([(1, {"prompt": "p", "cot": "c"})], "triplets",
                                 {"problem": "prompt", "thinking": "cot", "solution": "response"})
    assert (reject.reason, reject.detail) == (MISSING_MAPPED_COLUMN, "no column 'response' in this row")


@pytest.mark.parametrize("schema, mapping, message", [
    ("csv", None, "unknown dataset_format 'csv'; expected one of gsm8k, triplets, messages, openr1_math"),
    ("auto", {"problem": "prompt"}, "a field mapping needs a named dataset_format, not 'auto'"),
    ("triplets", {"question": "prompt"}, "field mapping for triplets: unknown field\\(s\\) 'question'"),
])
def test_check_schema_refuses_unknown_schemas_and_mappings(schema, mapping, message):
    with pytest.raises(ValueError, match=message):
        check_schema(schema, mapping)
    with pytest.raises(ValueError, match=message):
        convert_rows([], schema, mapping)


@pytest.mark.parametrize("schema", sorted(SCHEMAS))
def test_schema_fields_are_required_and_optional_fields_optional(schema):
    name = next(name for name, (fixture_schema, _) in sorted(FIXTURE_OUTCOMES.items()) if fixture_schema == schema)
    good = next(row for _, row in iter_records(FIXTURES / name) if isinstance(row, dict))
    assert convert_row(good, schema, "x")
    for field in SCHEMA_FIELDS[schema]:
        with pytest.raises(RejectError):
            convert_row({k: v for k, v in good.items() if k != field}, schema, "x")
    for field in SCHEMA_OPTIONAL_FIELDS[schema]:
        if field != "answer" or schema != "limo":
            assert convert_row({k: v for k, v in good.items() if k != field}, schema, "x")


# --- read_reasoning_rows with the new schemas ---------------------------------------------------------------------

def test_read_reasoning_rows_auto_and_limit_counts_examples_not_source_rows():
    rows, rejects = read_reasoning_rows(FIXTURES / "openr1_math.parquet", "auto")
    assert len(rows) == 4 and [r.line for r in rejects] == [2, 3, 4, 6]  # row 3: one generation graded out
    limited, _ = read_reasoning_rows(FIXTURES / "openr1_math.parquet", "openr1_math", limit=1)
    assert [r["id"] for r in limited] == [f"{UUID_A}-g0"]
    ids = [r["id"] for r in read_reasoning_rows(FIXTURES / "limo.json", "limo", id_prefix="limo")[0]]
    assert ids == ["limo-000001", "limo-000002"]


# --- property: whatever a converter produces is a well-formed trained reply ---------------------------------------

_PIECES = st.sampled_from(["<think>", "</think>", "<|begin_of_thought|>", "<|end_of_thought|>",
                           "<|begin_of_solution|>", "<|end_of_solution|>", "\\boxed{", "}", " ", "\n", "a", "42",
                           "####"])
_TEXT = st.one_of(st.text(max_size=12), st.lists(st.one_of(_PIECES, st.text(max_size=4)), max_size=8).map("".join))
_REPLY = st.one_of(  # assistant texts: random, or the two reasoning layouts around random parts
    _TEXT, st.builds("<think>{}</think>{}".format, _TEXT, _TEXT),
    st.builds("<|begin_of_thought|>{}<|end_of_thought|>{}<|begin_of_solution|>{}<|end_of_solution|>".format,
              _TEXT, st.sampled_from(["", "\n\n", "x"]), _TEXT))
_TURN = st.one_of(st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": _TEXT}),
                  st.fixed_dictionaries({"role": st.just("assistant"), "content": _REPLY}))
_ROWS = {
    "gsm8k": st.fixed_dictionaries({"question": _TEXT,
                                    "answer": st.one_of(_TEXT, st.builds("{}#### {}".format, _TEXT, _TEXT))}),
    "triplets": st.fixed_dictionaries({"problem": _TEXT, "thinking": _TEXT, "solution": _TEXT}),
    "messages": st.fixed_dictionaries({"messages": st.builds(  # mostly ending user -> assistant, as chats do
        lambda head, tail: head + tail, st.lists(_TURN, max_size=3),
        st.one_of(st.just([]), st.tuples(_TEXT, _REPLY).map(
            lambda qa: [{"role": "user", "content": qa[0]}, {"role": "assistant", "content": qa[1]}])))}),
    "sharegpt": st.fixed_dictionaries({"system": _TEXT, "conversations": st.builds(
        lambda head, q, a: head + [{"from": "human", "value": q}, {"from": "gpt", "value": a}],
        st.lists(st.fixed_dictionaries({"from": st.sampled_from(["human", "gpt", "system"]), "value": _REPLY}),
                 max_size=2), _TEXT, _REPLY)}),
    "openr1_math": st.integers(0, 3).flatmap(lambda n: st.fixed_dictionaries({
        "problem": _TEXT, "answer": _TEXT, "uuid": st.just("u"),
        "generations": st.lists(_REPLY, min_size=n, max_size=n),
        "is_reasoning_complete": st.lists(st.booleans(), min_size=n, max_size=n),
        "correctness_math_verify": st.lists(st.booleans(), min_size=n, max_size=n)})),
    "openthoughts_metadata": st.fixed_dictionaries({"problem": _TEXT, "deepseek_reasoning": _TEXT,
                                                    "deepseek_solution": _TEXT, "starter_code": _TEXT}),
    "s1k": st.fixed_dictionaries({"question": _TEXT, "thinking_trajectories": st.lists(_TEXT, max_size=2),
                                  "attempt": _TEXT, "solution": _TEXT}),
    "s1k_1_1": st.fixed_dictionaries({"question": _TEXT, "deepseek_thinking_trajectory": _TEXT,
                                      "deepseek_attempt": _TEXT}),
    "limo": st.fixed_dictionaries({"question": _TEXT, "solution": _TEXT, "answer": _TEXT}),
    "r1_distill_sft": st.fixed_dictionaries({"problem": _TEXT, "reannotated_assistant_content": _REPLY,
                                             "solution": _TEXT}),
}


def test_the_property_covers_every_schema():
    assert set(_ROWS) == set(SCHEMAS)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(_ROWS)).flatmap(lambda schema: st.tuples(st.just(schema), _ROWS[schema])))
def test_every_converted_row_renders_exactly_one_think_block_per_assistant_turn(schema_and_row):
    schema, row = schema_and_row
    try:
        examples = SCHEMAS[schema](row, "x")
    except RejectError as err:
        assert err.reason and str(err) == (f"{err.reason}: {err.detail}" if err.detail else err.reason)
        return
    assert examples and not isinstance(examples[0], Reject)  # a row with no good example raises instead
    for example in examples:
        if isinstance(example, Reject):  # one bad generation beside good ones: counted, with its reason
            assert example.reason and example.id.startswith(("u-g", "x-g"))
            continue
        assert example["messages"][-1]["role"] == "assistant" and example["messages"][-2]["role"] == "user"
        for turn in example["messages"]:
            if turn["role"] != "assistant":
                continue
            for part in (turn["think"], turn["answer"]):
                assert part and part == part.strip()
                assert THINK_OPEN not in part and THINK_CLOSE not in part
        for message in to_chat_messages(example):
            if message["role"] == "assistant":
                assert message["content"].count(THINK_OPEN) == 1 and message["content"].count(THINK_CLOSE) == 1
                assert message["content"].startswith(THINK_OPEN)


# --- found in review ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("row, reason", [
    ({"messages": [{"role": "user", "content": "q"},
                   {"role": "assistant", "content": [{"type": ["reasoning"], "value": "t"},
                                                     {"type": "text", "value": "a"}]}]},
     "assistant content part without a string 'type'"),
    ({"messages": [{"role": "user", "content": "q"},
                   {"role": "assistant", "content": [{"value": "t"}, {"type": "image", "value": "a"}]}]},
     "assistant content part without a string 'type'"),
    ({"conversations": [{"from": {"name": "human"}, "value": "q"}, {"from": "gpt", "value": "<think>t</think>a"}]},
     "ShareGPT turn without a string 'from'"),
    ({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "<think>t</think>a"}]},
     EMPTY_PROMPT),
    ({"messages": [{"role": {"x": 1}, "content": "q"}, {"role": "assistant", "content": "<think>t</think>a"}]},
     "unsupported role of type dict (tool turns are not trained yet)"),
])
def test_odd_types_are_rejects_with_a_stable_reason_not_crashes(row, reason):
    [(_, item)] = list(convert_rows([(1, row)]))
    assert isinstance(item, Reject) and item.reason == reason


def test_a_broken_first_row_does_not_fix_the_schema_for_the_file():
    limo = {"question": "What is 1+1?", "solution": "1 and 1 make 2.", "answer": "2"}
    records = [(1, {"question": "What is 1+1?", "answer": "2"}), (2, limo), (3, limo | {"question": "And 2+2?"})]
    converted = convert_rows(records)
    items = [item for _, item in converted]
    assert isinstance(items[0], Reject) and converted.schema == "limo"
    assert all(isinstance(item, list) for item in items[1:])


def test_source_and_domain_that_are_not_text_get_defaults():
    row = {"problem": "q", "thinking": "t", "solution": "s", "source": None, "domain": 5}
    [example] = data_schemas.from_triplet(row, "x")
    assert (example["source"], example["domain"]) == ("unknown", "general")
