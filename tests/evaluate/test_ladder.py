"""The quant ladder: drops from F16 with paired intervals, flags past the recipe's limit."""
import pytest

from lib.evaluate.ladder import ladder


def samples(closed, correct):
    return [{"problem_id": f"p{i}", "closed_think": c, "correct": r} for i, (c, r) in enumerate(zip(closed, correct))]


def test_a_quant_past_the_limit_is_flagged_and_one_within_is_not():
    n = 20
    files = {"base": samples([False] * n, [False] * n),
             "distilled-F16": samples([True] * n, [True] * 10 + [False] * 10),
             "distilled-Q8_0": samples([True] * 19 + [False], [True] * 10 + [False] * 10),
             "distilled-Q4_K_M": samples([True] * 14 + [False] * 6, [True] * 5 + [False] * 15),
             "distilled-Q8_0-no-repeat-penalty": samples([False] * n, [False] * n)}
    rows = {(r["file"], r["metric"]): r for r in ladder(files, {"closure": 0.1, "pass@1": 0.1})}
    assert set(rows) == {(f, m) for f in ("distilled-Q8_0", "distilled-Q4_K_M") for m in ("closure", "pass@1")}
    assert rows["distilled-Q8_0", "closure"]["drop"]["mean"] == 0.05 and not rows["distilled-Q8_0", "closure"]["flagged"]
    q4 = rows["distilled-Q4_K_M", "closure"]
    assert (q4["reference_file"], q4["reference"], q4["quant"], q4["drop"]["mean"], q4["flagged"]) == (
        "distilled-F16", 1.0, 0.7, 0.3, True)
    assert q4["drop"]["low"] > 0.05 and q4["drop"]["high"] <= 0.55  # paired: only the 6 problems that changed vary
    assert rows["distilled-Q4_K_M", "pass@1"]["flagged"] and not rows["distilled-Q8_0", "pass@1"]["flagged"]


def test_a_gain_is_a_negative_drop_and_without_f16_the_most_precise_file_judged_is_the_reference():
    files = {"distilled-F16": samples([False, False], [False, False]),
             "distilled-Q8_0": samples([True, True], [False, False]),
             "distilled-Q4_K_M": samples([True, False], [False, False])}
    assert ladder(files, {"closure": 0.0})[0]["drop"]["mean"] == pytest.approx(-1.0)
    without_f16 = ladder({k: files[k] for k in ("distilled-Q4_K_M", "distilled-Q8_0")}, {"closure": 0.1})
    assert {(r["file"], r["reference_file"]) for r in without_f16} == {("distilled-Q4_K_M", "distilled-Q8_0")}
    assert without_f16[0]["drop"]["mean"] == pytest.approx(0.5) and without_f16[0]["flagged"]
    assert ladder({"distilled-Q8_0": files["distilled-Q8_0"]}, {"closure": 0.1}) == []


def test_the_merged_model_is_the_top_rung_and_f16_is_gated_against_it():
    files = {"distilled-HF": samples([True] * 10, [True] * 10),
             "distilled-F16": samples([True] * 10, [True] * 4 + [False] * 6),
             "distilled-Q8_0": samples([True] * 10, [True] * 4 + [False] * 6)}
    rows = {(r["reference_file"], r["file"], r["metric"]): r for r in ladder(files, {"pass@1": 0.1, "closure": 0.1})}
    pairs = (("distilled-HF", "distilled-F16"), ("distilled-F16", "distilled-Q8_0"))
    assert set(rows) == {(ref, f, m) for ref, f in pairs for m in ("closure", "pass@1")}
    conversion = rows["distilled-HF", "distilled-F16", "pass@1"]
    assert conversion["drop"]["mean"] == pytest.approx(0.6) and conversion["flagged"]  # the conversion lost it
    assert not rows["distilled-F16", "distilled-Q8_0", "pass@1"]["flagged"]
