"""The recipe's grpo: section, TRL's arguments built from it, the memory plan of one step, the prompts."""
import pytest

from lib.architectures import load_architecture
from lib.grpo.plan import generation_cache_bytes, grpo_memory_plan
from lib.grpo.settings import GrpoSettings, GrpoSettingsError, grpo_settings
from lib.grpo.train import grpo_args, grpo_backend, prompt_rows
from lib.modes import check_recipe
from lib.recipe import ParamsError, load_recipe, with_overrides
from lib.runner import select_stages
from lib.train.backends import select_backend

RECIPES_WITH_GRPO = ["smollm2_135m_arithmetic", "llama32_3b_thinking8k", "nanbeige4_3b_coldstart"]


@pytest.mark.parametrize("name", RECIPES_WITH_GRPO)
def test_shipped_grpo_sections_are_valid(name):
    recipe = load_recipe(name)
    settings = grpo_settings(recipe.grpo)
    assert settings.completions_per_step == settings.prompts_per_step * settings.num_generations


@pytest.mark.parametrize("section, names", [
    ({"num_generation": 8}, "did you mean 'num_generations'"),
    ({"loss_type": "ppo"}, "loss_type"),
    ({"num_generations": 1}, "num_generations"),
    ({"reward_weights": {"speed": 1}}, "unknown reward"),
    ({"reward_weights": {"correctness": 0}}, "nothing to learn"),
    ({"max_completion_length": 64, "overlong_buffer": 64}, "overlong_buffer"),
    ({"beta": -0.1}, "beta"),
])
def test_a_wrong_key_is_named(section, names):
    with pytest.raises(GrpoSettingsError, match=names):
        grpo_settings(section)


def test_a_wrong_grpo_section_stops_the_recipe_check_naming_file_and_key():
    recipe = with_overrides(load_recipe("smollm2_135m_arithmetic"), grpo={"group": 8})
    with pytest.raises(ParamsError, match=r"grpo: unknown key 'group'"):
        check_recipe(recipe)


def test_reward_weights_follow_the_reward_order_and_default_to_zero():
    assert GrpoSettings(reward_weights={"format": 2.0}).weights == [0.0, 2.0, 0.0]


def test_trl_arguments_count_completions_per_step():
    from trl import GRPOConfig

    recipe = load_recipe("smollm2_135m_arithmetic")
    settings = grpo_settings(recipe.grpo)
    backend = select_backend(recipe, has_cuda=False, has_unsloth=False)
    args = GRPOConfig(**grpo_args(recipe, settings, "/tmp/unused", backend))
    # a step's completions are generated together, trained num_generations rows a pass (a shuffled slice of the
    # step), accumulated over the prompts
    assert args.per_device_train_batch_size == settings.num_generations
    assert args.gradient_accumulation_steps == settings.prompts_per_step
    assert args.generation_batch_size == settings.prompts_per_step * settings.num_generations
    assert args.num_generations == settings.num_generations and args.beta == settings.beta
    assert args.reward_weights == settings.weights and args.loss_type == settings.loss_type


def test_grpo_trains_with_peft_where_03_uses_unsloth():
    recipe = load_recipe("llama32_3b_thinking8k")
    backend = grpo_backend(select_backend(recipe, has_cuda=True, has_unsloth=True), recipe)
    assert backend.name == "transformers+peft" and backend.load_in_4bit
    assert backend.gradient_checkpointing is recipe.gradient_checkpointing


def test_the_plan_adds_the_generation_cache_and_the_reference_adapter_only_with_beta():
    recipe = load_recipe("llama32_3b_thinking8k")
    arch = load_architecture(recipe.architecture)
    backend = grpo_backend(select_backend(recipe, has_cuda=True, has_unsloth=True), recipe)
    with_kl = grpo_memory_plan(recipe, grpo_settings(recipe.grpo), 200, backend, arch)
    without = grpo_memory_plan(recipe, grpo_settings({**recipe.grpo, "beta": 0.0}), 200, backend, arch)
    assert with_kl["components_gib"]["reference adapter"] == with_kl["components_gib"]["lora_weights"] > 0
    assert "reference adapter" not in without["components_gib"]
    rows = 8 * (200 + recipe.grpo["max_completion_length"])
    # K and V, 28 layers, 8 kv heads x 128, bf16
    assert generation_cache_bytes(arch, 8, 200 + 2048, 2) == 2 * 28 * rows * 8 * 128 * 2
    assert with_kl["fits"], with_kl


def test_prompts_are_the_user_turns_with_their_answers_seeded():
    rows = [{"id": f"r{i}", "answer": str(i), "messages": [{"role": "user", "content": f"q{i}"},
                                                           {"role": "assistant", "think": "t", "answer": "a"}]}
            for i in range(10)] + [{"id": "none", "answer": None, "messages": [{"role": "user", "content": "x"}]}]
    everything = prompt_rows(rows, 0, 1)
    assert [p["id"] for p in everything] == [f"r{i}" for i in range(10)]  # the unanswerable row is left out
    assert everything[3]["prompt"] == [{"role": "user", "content": "q3"}] and everything[3]["answer"] == "3"
    assert prompt_rows(rows, 4, 1) == prompt_rows(rows, 4, 1) != prompt_rows(rows, 4, 2)
    plain = prompt_rows(rows, 1, 1, plain_format="User: {problem}\nAssistant: <think>\n{thinking}\n</think>\n"
                                                 "{solution}")
    assert plain[0]["prompt"].startswith("User: q") and plain[0]["prompt"].endswith("Assistant:")
    system = prompt_rows(rows, 1, 1, system_prompt="Think.")
    assert system[0]["prompt"][0] == {"role": "system", "content": "Think."}


def test_06_runs_by_default_only_for_a_recipe_with_a_grpo_section():
    assert select_stages(None, grpo=True)[-1] == "06_grpo"
    assert "06_grpo" not in select_stages(None, grpo=False)
    assert select_stages("06", grpo=False) == ["06_grpo"]  # asked for by name: runs (and says what is missing)


def test_progress_prints_a_line_per_logged_step_and_moves_the_bar():
    from lib.grpo.train import progress_printer

    class Bar:
        n, closed = 0, False

        def update(self, k):
            self.n += k

        def close(self):
            self.closed = True

    class State:
        global_step = 0

    lines, bar = [], Bar()
    callback = progress_printer(4, print_fn=lambda line, flush=True: lines.append(line), bar=lambda *_: bar)
    callback.on_train_begin(None, State, None)
    State.global_step = 2
    callback.on_log(None, State, None, logs={"loss": 0.1})  # not a GRPO step's log: nothing
    callback.on_log(None, State, None, logs={"reward": 0.5, "rewards/correctness/mean": 0.25,
                                             "completions/mean_length": 50, "completions/clipped_ratio": 0.125})
    callback.on_train_end(None, State, None)
    assert lines == ["step 2/4 · reward 0.50 · correctness 0.25 · format 0.00 · overlong 0.00 · length 50 · "
                     "clipped 12% · 0.0 min"]
    assert bar.n == 2 and bar.closed


@pytest.mark.parametrize("section, names", [
    ({"learning_rate": "fast"}, r"learning_rate: expected float, got str \('fast'\)"),
    ({"use_vllm": "yes"}, "use_vllm: expected bool"),
    ({"scale_rewards": "std"}, "scale_rewards"),
])
def test_a_wrongly_typed_value_is_named_with_its_key(section, names):
    with pytest.raises(GrpoSettingsError, match=names):
        grpo_settings(section)


def test_yaml_exponents_and_nones_are_read_as_meant():
    settings = grpo_settings({"learning_rate": "5e-6", "epsilon_high": None, "num_generations": 4})
    assert settings.learning_rate == 5e-6 and settings.epsilon_high is None
    assert grpo_settings({"epsilon_high": 0.28}).epsilon_high == 0.28


def test_a_step_over_the_budget_is_refused_naming_what_shrinks_it():
    from lib.grpo.plan import GrpoOverBudget, check_budget

    recipe = with_overrides(load_recipe("llama32_3b_thinking8k"), vram_budget_gib=8)
    arch = load_architecture(recipe.architecture)
    backend = grpo_backend(select_backend(recipe, has_cuda=True, has_unsloth=True), recipe)
    plan = grpo_memory_plan(recipe, grpo_settings(recipe.grpo), 200, backend, arch)
    with pytest.raises(GrpoOverBudget, match=r"grpo.num_generations \(the rows trained at once\)"):
        check_budget(recipe, plan)
    check_budget(with_overrides(recipe, allow_over_budget=True), plan)  # allowed: no error


def test_more_prompts_a_step_grow_the_generation_cache_not_the_trained_batch():
    # a step's completions are generated together but trained num_generations rows at a time: four prompts a step
    # plan the same training memory as one, and four times the KV cache; GRPO trains with dropout off
    recipe = load_recipe("llama32_3b_thinking8k")
    assert recipe.lora_dropout > 0
    backend = grpo_backend(select_backend(recipe, has_cuda=True, has_unsloth=True), recipe)
    arch = load_architecture(recipe.architecture)
    one, four = (grpo_memory_plan(recipe, grpo_settings({**recipe.grpo, "prompts_per_step": n}), 200, backend, arch)
                 for n in (1, 4))
    cache = "generation KV cache"
    assert four["components_gib"][cache] == pytest.approx(4 * one["components_gib"][cache], rel=1e-3)
    assert {k: v for k, v in four["components_gib"].items() if k != cache} == {
        k: v for k, v in one["components_gib"].items() if k != cache}
    assert "lora_dropout" not in four["components_gib"] and four["assumptions"]["rows_per_pass"] == 8


def test_vllm_reserves_its_share_of_the_card_instead_of_the_generation_cache():
    recipe = load_recipe("llama32_3b_thinking8k")
    backend = grpo_backend(select_backend(recipe, has_cuda=True, has_unsloth=True), recipe)
    plan = grpo_memory_plan(recipe, grpo_settings({**recipe.grpo, "use_vllm": True}), 200, backend,
                            load_architecture(recipe.architecture))
    assert plan["components_gib"]["vLLM pool (colocated)"] == pytest.approx(0.3 * 16, abs=0.01)
    assert "generation KV cache" not in plan["components_gib"]
