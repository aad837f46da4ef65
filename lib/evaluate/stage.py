"""Stage 05: judge the base model and every exported GGUF on held-out prompts with llama.cpp.

Usage: ``facts = run_eval(cfg, read_heldout(cfg))``

Reads only saved artifacts: 01's held-out prompts and 04's files and sizes. In a dry-run the mode runs no model:
the prompts are checked and the memory each file needs on a device is estimated.
"""
from __future__ import annotations

import json
from pathlib import Path

from lib.conversation import generation_prompt_opens_think, prompt_messages
from lib.evaluate.answers import answers_match
from lib.jsonl import read_jsonl, write_jsonl
from lib.paths import atomic_write_text
from lib.plan.recipe_plan import kv_cache_bytes
from lib.run_config import RunConfig, read_manifest, stage_file, write_manifest

STAGE = "05_eval_edge"


def read_heldout(cfg: RunConfig) -> list[dict]:
    """The held-out rows 01_data set aside (never trained on)."""
    return read_jsonl(stage_file(cfg, "01_data", "heldout"))


def write_prompts(cfg: RunConfig, heldout: list[dict]) -> Path:
    """Held-out prompts as the model will see them (template messages + reference answer), each marked when the
    template's generation prompt opens `<think>` itself (scoring then restores it: `lib.evaluate.llama_runs`)."""
    recipe, path = cfg.recipe, cfg.stage_dir(STAGE) / "prompts.jsonl"
    tokenizer = cfg.mode.tokenizer() if recipe.chat_format == "template" else None
    rows = []
    for row in heldout:
        messages = prompt_messages(row, recipe.system_prompt)
        opens = bool(tokenizer) and generation_prompt_opens_think(tokenizer, messages, recipe.chat_template_kwargs)
        rows.append({"id": row["id"], "messages": messages, "answer": row.get("answer"), "prompt_opens_think": opens})
    write_jsonl(path, rows)
    return path


def evaluation_runs(files: dict[str, Path], sampling: dict, ablation_file: str = "") -> list[dict]:
    """One run per file with the recipe's sampling, plus `distilled-<ablation_file>` once more without the
    repeat penalty when the recipe uses one and the file exists (pure: which runs, under which labels)."""
    runs = [{"label": label, "path": path, "sampling": sampling} for label, path in files.items()]
    label = f"distilled-{ablation_file}"
    if ablation_file and sampling.get("repeat_penalty", 1.0) != 1.0 and label in files:
        runs.append({"label": f"{label}-no-repeat-penalty", "path": files[label],
                     "sampling": {**sampling, "repeat_penalty": 1.0}})
    return runs


def edge_memory_row(size: dict, kv_bytes: int) -> dict:
    """What one exported file needs on a device: its weights (real bytes, or the estimate) and the KV cache."""
    weights = size["real_bytes"] or size["estimated_bytes"]
    return {"file": size["file"], "weights_bytes": weights, "kv_cache_bytes": kv_bytes,
            "total_gib": round((weights + kv_bytes) / 2**30, 2)}


def run_eval(cfg: RunConfig, heldout: list[dict]) -> dict:
    """Evaluate the base model and the exported files (through the run's mode); the edge memory plan of each."""
    recipe, out = cfg.recipe, cfg.stage_dir(STAGE)
    prompts = write_prompts(cfg, heldout)
    unparseable = [r["id"] for r in heldout if r.get("answer") is None or not answers_match(r["answer"], r["answer"])]
    kv = kv_cache_bytes(cfg.mode.architecture(), recipe.eval_n_ctx)
    edge_memory = [edge_memory_row(size, kv) for size in read_manifest(cfg, "04_merge_export")["facts"]["sizes"]]
    files = cfg.mode.judged_files(cfg, out)  # the base model and 04's files (none in a dry-run)
    runs = evaluation_runs(files, recipe.eval_sampling(), recipe.eval_ablation_file)
    results = cfg.mode.evaluate(cfg, runs, prompts, out)
    atomic_write_text(out / "results.json", json.dumps({"recipe": recipe.name, "results": results}, indent=2))
    facts = {"mode": cfg.mode.name, "prompts": len(heldout), "unparseable_references": unparseable,
             "kv_cache_bytes": kv, "edge_memory": edge_memory, "results": results,
             "example": first_output(out, results)}
    write_manifest(cfg, STAGE, {"prompts": prompts} | {k: str(v) for k, v in files.items()},
                   {"results": out / "results.json"}, facts)
    return facts


def first_output(out: Path, results: list[dict]) -> dict | None:
    """The first answer of the distilled Q8_0 (else the last file judged), for the notebook; None if none ran."""
    if not results:
        return None
    label = next((r["label"] for r in results if r["label"].endswith("Q8_0")), results[-1]["label"])
    record = read_jsonl(out / f"{label}.outputs.jsonl")[0]
    return {k: record[k] for k in ("id", "reference", "predicted", "correct", "closed_think", "output")} | {
        "file": label}
