"""Stage 04: merge the adapter, prove the merge is exact, export GGUF files, prove the F16 file chats as training did
(the template round trip) and compare sizes with estimates.

Usage: ``facts = run_export(cfg, probe_texts, conversations)``

In a dry-run the mode merges and converts nothing: the sizes table then holds the estimates alone.
"""
from __future__ import annotations

from lib.conversation import to_chat_messages
from lib.export.gguf import gguf_name, gguf_tensor_type_counts, size_table
from lib.export.model_card import write_model_card
from lib.export.modelfile import write_modelfiles
from lib.export.round_trip import check_round_trip, round_trip, round_trip_conversations
from lib.paths import gguf_dir, merged_model_dir
from lib.progress import Progress
from lib.plan.export_plan import PROBES
from lib.plan.recipe_plan import gguf_estimates
from lib.run_config import RunConfig, write_manifest

STAGE = "04_merge_export"


def merge_probe_texts(train_rows: list[dict]) -> list[str]:
    """The merge check's probes: the first `PROBES` training conversations (the export plan counts their logits),
    question and reasoning included."""
    return ["\n".join(m["content"] for m in to_chat_messages(row)) for row in train_rows[:PROBES]]


def export_conversations(cfg: RunConfig, train_rows: list[dict]) -> list[dict]:
    """The round trip's conversations: the recipe's count, from real training rows (none for a plain prompt
    format, which uses no template)."""
    recipe = cfg.recipe
    if recipe.chat_format == "plain":
        return []
    return round_trip_conversations(train_rows, recipe.system_prompt, recipe.round_trip_conversations)


def run_export(cfg: RunConfig, probe_texts: list[str], conversations: list[dict]) -> dict:
    """Merge (checked), convert, quantize through the run's mode; the F16 file's template round trip (ExportError
    when it would chat otherwise than training did); sizes against the architecture's estimates."""
    recipe, folder = cfg.recipe, gguf_dir(cfg.run_dir)
    merged = merged_model_dir(cfg.run_dir)
    progress = Progress(4, "04 export")
    with progress.step("merge, checked against the adapter"):
        facts = cfg.mode.merge(cfg, merged, probe_texts)  # the mode finds 03's adapter (a dry-run has none)
    with progress.step(f"GGUF conversion and quantization ({', '.join(recipe.gguf_files())})"):
        files = cfg.mode.convert(cfg, merged, folder)
    names = {quant: gguf_name(recipe.name, quant) for quant in recipe.gguf_files()}
    facts |= {"sizes": size_table(files, gguf_estimates(recipe, cfg.mode.architecture()), names),
              "tensor_types": {q: gguf_tensor_type_counts(p) for q, p in files.items()}}
    with progress.step("LoRA adapter GGUF"):
        adapter = cfg.mode.convert_adapter(cfg, folder)  # one base GGUF, adapters swapped (none: dry-run)
    if adapter:
        facts["lora_adapter"] = {"file": adapter.name, "bytes": adapter.stat().st_size}
    with progress.step("chat template round trip"):
        if "F16" in files and conversations:  # a real or tiny file, a chat template in training
            greedy = len(conversations) if recipe.round_trip_greedy else 0
            facts["round_trip"] = check_round_trip(round_trip(merged, files["F16"], conversations, greedy,
                                                              recipe.chat_template_kwargs, recipe.eval_n_threads))
            stops = [row["text"] for row in facts["round_trip"]["end_of_turn"]]
            facts["modelfiles"] = write_modelfiles(files, stops, recipe.eval_sampling(), recipe.eval_n_ctx)  # Ollama
    # README.md beside the files (none in a dry-run)
    card = write_model_card(cfg, facts["sizes"], lora=facts.get("lora_adapter"))
    write_manifest(cfg, STAGE, {"train_manifest": cfg.run_dir / "03_train" / "manifest.json"},
                   files | ({"LoRA": adapter} if adapter else {}) | ({"model_card": card} if card else {})
                   | {f"Modelfile {name}": folder / name for name in facts.get("modelfiles", {}).get("files", [])},
                   facts)
    return facts
