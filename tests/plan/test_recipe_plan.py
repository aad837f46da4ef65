"""`python -m lib plan`: the backend it planned for and how that was decided, --backend for the other stack, and
04's RAM/disk needs in the same JSON object."""
import json

import pytest

from lib.__main__ import main
from lib.recipe import load_recipe
from lib.train.backends import planned_backend


def _plan(capsys, *argv: str) -> dict:
    assert main(["plan", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_plan_names_the_backend_planned_backend_chose(capsys):
    plan = _plan(capsys, "llama32_3b")
    backend, how = planned_backend(load_recipe("llama32_3b"))
    assert plan["backend"]["name"] == backend.name == plan["memory_plan"]["assumptions"]["backend"]
    assert plan["backend"]["how_decided"] == how
    assert plan["backend"]["optim"] == backend.optim and plan["backend"]["device"] == "cuda"
    assert plan["export_plan"]["disk_bytes"]["total"] > plan["gguf_bytes"]["Q4_K_M"]


def test_backend_option_plans_the_other_stack(capsys):
    unsloth = _plan(capsys, "mistral22b", "--backend", "unsloth")
    peft = _plan(capsys, "mistral22b", "--backend", "transformers+peft")
    assert (unsloth["backend"]["name"], peft["backend"]["name"]) == ("unsloth", "transformers+peft")
    assert unsloth["backend"]["gradient_checkpointing"] == "unsloth" and peft["backend"]["gradient_checkpointing"]
    assert peft["backend"]["how_decided"].startswith("--backend transformers+peft")
    # Mistral-Small at 8k tokens fits 24 GiB only with Unsloth's offloaded checkpoints (what its params file says)
    assert unsloth["memory_plan"]["fits"] and not peft["memory_plan"]["fits"]
    assert peft["memory_plan"]["components"]["activations"] > 3 * unsloth["memory_plan"]["components"]["activations"]


def test_an_unknown_backend_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["plan", "llama32_3b", "--backend", "deepspeed"])
    assert exit_.value.code == 2 and "invalid choice: 'deepspeed'" in capsys.readouterr().err
