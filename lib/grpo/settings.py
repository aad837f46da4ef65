"""The recipe's `grpo:` section: what 06_grpo trains with, validated before anything loads.

Usage: ``settings = grpo_settings(recipe.grpo)`` (GrpoSettingsError names the key and the fix).

Keys follow TRL's `GRPOConfig` where they feed it (look them up there); the rest are this project's:
`start_from`, `prompts`, `prompts_per_step`, `reward_weights`, `overlong_buffer`.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field

from lib.grpo.rewards import REWARD_NAMES
from lib.recipe import ParamsError, _checked

LOSS_TYPES = ("grpo", "dr_grpo", "dapo")  # TRL's names; the three the users ask for
SCALE_REWARDS = ("group", "batch", "none")  # TRL's: advantages divided by the group's std, the batch's, or not
START_FROM = ("sft", "base")


class GrpoSettingsError(ValueError):
    """A `grpo:` key is wrong; the message names it."""


@dataclass(frozen=True)
class GrpoSettings:
    start_from: str = "sft"  # "sft": continue 03's LoRA adapter (the cold start); "base": a fresh LoRA on the base
    prompts: int = 0  # prompts drawn (seeded) from 01's training split; 0 = all. The held-out split is never used
    # another source of prompts with reference answers, for recipes whose SFT data has none (R1 traces as chat
    # messages): read, verified and decontaminated by 01's pipeline (lib.data), held-out prompts removed. "" = 01's
    dataset_path: str = ""
    dataset_format: str = "auto"
    max_steps: int = 50  # optimizer steps
    prompts_per_step: int = 2  # distinct prompts per optimizer step (each sampled num_generations times)
    num_generations: int = 8  # the group: completions per prompt whose rewards are compared
    max_completion_length: int = 128  # tokens per completion; a completion cut here is "clipped" in the log
    temperature: float = 1.0  # sampling for the group: diversity is what gives a group different rewards
    top_p: float = 1.0
    beta: float = 0.0  # KL coefficient against the starting model; 0 (DAPO, Dr. GRPO) loads no reference model
    learning_rate: float = 1.0e-5
    loss_type: str = "dapo"  # grpo | dr_grpo | dapo (TRL's GRPOConfig.loss_type)
    epsilon: float = 0.2  # clip range of the policy ratio
    epsilon_high: float | None = None  # DAPO's clip-higher upper bound (e.g. 0.28); None = epsilon
    scale_rewards: str = "group"  # Dr. GRPO: "none" (the std division biases towards easy and hard questions)
    num_iterations: int = 1  # policy updates per generated batch (μ in the GRPO paper)
    mask_truncated_completions: bool = False  # DAPO: leave cut completions out of the loss (the overlong reward
    # already punishes them; masking them too removes their only signal)
    reward_weights: dict = field(default_factory=lambda: {"correctness": 1.0, "format": 0.5, "overlong": 0.5})
    overlong_buffer: int = 32  # DAPO's soft overlong punishment starts this many tokens before the limit
    use_vllm: bool = False  # GPU with vLLM installed: TRL generates with vLLM (colocated); else transformers
    logging_steps: int = 1
    save_steps: int = 10  # checkpoints to resume from after a kill (as 03's)

    def __post_init__(self):
        checks = [
            (self.start_from in START_FROM, "start_from", f"{self.start_from!r}: use one of {', '.join(START_FROM)}"),
            (self.loss_type in LOSS_TYPES, "loss_type", f"{self.loss_type!r}: use one of {', '.join(LOSS_TYPES)}"),
            (self.scale_rewards in SCALE_REWARDS, "scale_rewards",
             f"{self.scale_rewards!r}: use one of {', '.join(SCALE_REWARDS)}"),
            (self.num_generations >= 2, "num_generations", f"{self.num_generations}: a group needs >= 2 completions"
             " (advantages are rewards compared within the group)"),
            (self.prompts_per_step >= 1, "prompts_per_step", f"{self.prompts_per_step}: must be >= 1"),
            (self.max_steps >= 1, "max_steps", f"{self.max_steps}: must be >= 1"),
            (self.prompts >= 0, "prompts", f"{self.prompts}: a number of prompts >= 0 (0 = all)"),
            (self.max_completion_length >= 8, "max_completion_length", f"{self.max_completion_length}: >= 8 tokens"),
            (0 < self.overlong_buffer < self.max_completion_length, "overlong_buffer",
             f"{self.overlong_buffer}: must be between 0 and max_completion_length ({self.max_completion_length})"),
            (self.beta >= 0, "beta", f"{self.beta}: must be >= 0 (0: no KL term, no reference model)"),
            (self.learning_rate > 0, "learning_rate", f"{self.learning_rate}: must be > 0"),
            (self.temperature > 0, "temperature", f"{self.temperature}: must be > 0 (a group of identical greedy "
             "completions has no advantage to learn from)"),
            (set(self.reward_weights) <= set(REWARD_NAMES), "reward_weights",
             f"unknown reward(s) {sorted(set(self.reward_weights) - set(REWARD_NAMES))}; "
             f"rewards are {', '.join(REWARD_NAMES)}"),
            (any(self.reward_weights.values()), "reward_weights", "every weight is 0: nothing to learn"),
        ]
        for ok, key, problem in checks:
            if not ok:
                raise GrpoSettingsError(f"{key}: {problem}")

    @property
    def weights(self) -> list[float]:
        """One weight per reward in REWARD_NAMES' order (TRL's reward_weights); a reward left out weighs 0."""
        return [float(self.reward_weights.get(name, 0.0)) for name in REWARD_NAMES]

    @property
    def completions_per_step(self) -> int:
        return self.prompts_per_step * self.num_generations


def grpo_settings(section: dict) -> GrpoSettings:
    """A recipe's `grpo:` mapping → GrpoSettings; an unknown key is named with the closest known one."""
    if not isinstance(section, dict):
        raise GrpoSettingsError(f"must be a mapping of keys to values, got {type(section).__name__}")
    known = [f.name for f in dataclasses.fields(GrpoSettings)]
    for key in section:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            raise GrpoSettingsError(f"unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else
                                                               f"; keys are {', '.join(known)}"))
    hints = typing.get_type_hints(GrpoSettings)
    checked = {}
    for key, value in section.items():
        expected = hints[key]
        if isinstance(expected, types.UnionType):  # `float | None`: None, or the other type
            if value is None:
                checked[key] = None
                continue
            expected = next(t for t in typing.get_args(expected) if t is not type(None))
        try:
            checked[key] = _checked(key, value, expected, "grpo")
        except ParamsError as err:  # "grpo: learning_rate: expected float, got str ('5e-6x')"
            raise GrpoSettingsError(str(err).removeprefix("grpo: ")) from None
    return GrpoSettings(**checked)
