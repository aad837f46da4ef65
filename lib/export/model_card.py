"""The model card: ``README.md`` beside the exported GGUF files, what a hub page or a colleague reads first — the
recipe, the data and its licence, how to run the files with the flags 05 judged them with, and 05's table.

Usage: ``write_model_card(cfg, sizes)`` (04, before any evaluation), ``write_model_card(cfg, sizes, results)`` (05);
``text = model_card(recipe, sizes, train_facts, results)`` is the pure part.
"""
from __future__ import annotations

import json
from pathlib import Path

from lib.paths import atomic_write_text, gguf_dir, project_path
from lib.recipe import default_quant
from lib.run_config import RunConfig

CARD = "README.md"

def hub_id(name: str) -> str:
    """`name` when it reads as a hub model id (owner/name), else "" (a local folder or a packaged model)."""
    local = name.startswith((".", "/")) or project_path(name).exists()
    return name if name.count("/") == 1 and not local else ""


def _percent(interval: dict) -> str:
    return f"{100 * interval['mean']:.0f} % [{100 * interval['low']:.0f}–{100 * interval['high']:.0f}]"


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB" if size >= 10 * 2**20 else f"{size / 2**20:.1f} MiB"


def _or_dash(value) -> str:
    return "—" if value is None else f"{value:g}"


def _loss(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "?"


def llama_cpp_flags(sampling: dict) -> str:
    """llama.cpp command-line flags for the sampling 05 judged the files with."""
    flags = [f"--temp {sampling.get('temperature', 0.6)}"]
    if sampling.get("temperature", 0.6) > 0:
        flags.append(f"--top-p {sampling.get('top_p', 0.95)}")
    if sampling.get("repeat_penalty", 1.0) != 1.0:
        flags.append(f"--repeat-penalty {sampling['repeat_penalty']}")
    flags.append("--reasoning-format deepseek")
    return " ".join(flags)


def written(sizes: list[dict]) -> list[dict]:
    """04's size rows of the files it wrote (a dry-run writes none)."""
    return [row for row in sizes if row.get("real_bytes")]


def served_file(recipe, sizes: list[dict]) -> str:
    """The file `python -m lib serve` runs by default (`default_quant`), else the last written; "" when none."""
    files = written(sizes)
    return next((row["file"] for row in files if row["quant"] == default_quant(recipe)), files[-1]["file"]
                if files else "")


def model_card(recipe, sizes: list[dict], train: dict, results: list[dict] | None, lora: dict | None = None,
               modelfile: str = "", tiny: bool = False) -> str:
    """The card's Markdown (Hugging Face front matter first). `sizes`: 04's size rows, `train`: 03's facts,
    `results`: 05's judged files (None before 05 ran), `lora`: 04's LoRA adapter GGUF {file, bytes}, `modelfile`:
    the Ollama Modelfile of the file `serve` defaults to ("" when none was written), `tiny`: a --tiny run's card."""
    front = ["---", "library_name: gguf", "tags: [gguf, llama.cpp, reasoning, thinkdistill]"]
    if recipe.license:
        front.append(f"license: {recipe.license}")
    if hub_id(recipe.model_name_or_path):
        front.append(f"base_model: {recipe.model_name_or_path}")
    front.append("---")
    method = ("logit distillation from " + recipe.teacher_model_name_or_path if recipe.teacher_model_name_or_path
              else "response-only LoRA fine-tuning")
    files = written(sizes)
    served = served_file(recipe, sizes) or "FILE.gguf"
    description = recipe.description.replace("<think>", "`<think>`").replace("</think>", "`</think>`")
    lines = [*front, "", f"# {recipe.name}", "", description.replace("``", ""), "",
             *(["> A `--tiny` run: a tiny random model of the recipe's family, made to test the chain. Not a model "
                "to use.", ""] if tiny else []),
             f"Made with thinkdistill's recipe `params/{recipe.name}.yaml`: {method} of "
             f"`{recipe.model_name_or_path}` on `<think>…</think>` reasoning traces, then the adapter merged and "
             "exported to GGUF with llama.cpp's converter. The model writes its reasoning between `<think>` and "
             "`</think>`, then its answer.", "",
             "## Training", "",
             "| | |", "|---|---|",
             f"| data | `{recipe.dataset_path}` ({train.get('examples', '?')} examples, at most "
             f"{recipe.max_length} tokens) |",
             f"| data licence | {recipe.dataset_license or 'not stated in the recipe (`dataset_license`)'} |",
             f"| model licence | {recipe.license or 'the base model’s (not stated in the recipe: `license`)'} |",
             f"| LoRA | r {recipe.lora_r}, alpha {recipe.lora_alpha}, dropout {recipe.lora_dropout}, on "
             f"{', '.join(recipe.lora_target_modules)} |",
             f"| schedule | {train.get('steps', '?')} steps, learning rate {recipe.learning_rate}, "
             f"{recipe.lr_scheduler_type}, seed {recipe.seed} |",
             f"| training loss | {_loss(train.get('first_loss'))} → {_loss(train.get('last_loss'))} |", "",
             "## Files", "", "| file | type | size |", "|---|---|---|",
             *[f"| `{row['file']}` | {row['quant']} | {_mib(row['real_bytes'])} |" for row in files],
             *([f"| `{lora['file']}` | LoRA adapter alone, for any GGUF of `{recipe.model_name_or_path}`: "
                f"`llama-server -m base.gguf --lora {lora['file']}` | {_mib(lora['bytes'])} |"]
               if lora else []),
             "",
             "## Run it", "",
             "Sampling as evaluated (llama.cpp; `--reasoning-format deepseek` returns the thought apart from the "
             "answer):", "", "```sh",
             f"llama-server -m {served} --jinja "
             f"{llama_cpp_flags(recipe.eval_sampling())}",
             f"python -m lib serve {recipe.name}   # the same, from this project (OpenAI-compatible, loopback)",
             *([f"ollama create {recipe.name.replace('_', '-')} -f {modelfile}   # Ollama: template, stops, sampling"]
               if modelfile else []),
             "```", ""]
    if recipe.chat_template_kwargs:
        lines += [f"Template variables used in training and evaluation: `{json.dumps(recipe.chat_template_kwargs)}` "
                  "(llama-server: `--chat-template-kwargs`).", ""]
    lines += ["## Evaluation", ""]
    if not results:
        return "\n".join(lines + ["Not evaluated yet: run 05 (`python -m lib run "
                                  f"{recipe.name} --stages 05`), which writes its table here.", ""])
    lines += ["Judged on the exported files the recipe names (`eval_files`; all by default) with llama.cpp (05): "
              "pass@1 with its 95 % interval, `</think>` closure, loop rate and median thought length; sizes are the "
              "number of problems × samples each.", "",
              "| file | benchmark | problems × k | think budget | pass@1 | closes `</think>` | loops | think tokens "
              "(median) | tokens/s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['label']} | {r['benchmark']} | {r['problems']} × {r['k']} | "
                     f"{r['think_budget'] if r.get('think_budget') is not None else '—'} | {_percent(r['pass@1'])} | "
                     f"{100 * r['closure_rate']:.0f} % | {100 * r['loop_rate']:.0f} % | "
                     f"{_or_dash(r['think_tokens'].get('p50'))} | {_or_dash(r.get('tokens_per_second'))} |")
    return "\n".join(lines + [""])


def write_model_card(cfg: RunConfig, sizes: list[dict], results: list[dict] | None = None,
                     lora: dict | None = None) -> Path | None:
    """(Re)write the card from 04's size rows, 03's manifest and 05's `results` (04 passes none: the files it just
    wrote are not judged yet, whatever an earlier 05 left); None when 04 wrote no file (a dry-run)."""
    served = served_file(cfg.recipe, sizes)
    if not served:
        return None
    train_manifest = cfg.run_dir / "03_train" / "manifest.json"
    train = json.loads(train_manifest.read_text())["facts"] if train_manifest.is_file() else {}
    folder = gguf_dir(cfg.run_dir)
    modelfile = (folder / served).with_suffix(".Modelfile")
    return atomic_write_text(folder / CARD, model_card(cfg.recipe, sizes, train, results, lora,
                                                        modelfile.name if modelfile.is_file() else "",
                                                        tiny=cfg.mode.name == "tiny"))
