"""Stage 05: judge the base model and every exported GGUF with llama.cpp on the recipe's benchmarks.

Usage: ``facts = run_eval(cfg, read_heldout(cfg))``

Reads only saved artifacts: 01's held-out prompts and 04's files and sizes. The benchmarks are the recipe's
`eval_benchmarks`: "heldout" (01's rows, written here as a prompts file) and shipped ones (`lib.eval_sets`), each
with `eval_k` samples per problem. In a dry-run the mode runs no model: the prompts are checked and the memory
each file needs on a device is estimated.
"""
from __future__ import annotations

import json
from pathlib import Path

import psutil

from lib.conversation import generation_prompt_opens_think, prompt_messages
from lib.eval_sets import HELDOUT
from lib.evaluate.benchmark_eval import TRANSFORMERS
from lib.evaluate.benchmarks import load_benchmark
from lib.evaluate.judging import judge_sample
from lib.evaluate.ladder import MERGED as MERGED_LABEL, ladder
from lib.export.gguf import gpu_offload, quantize_gguf, weights_bytes
from lib.export.model_card import write_model_card
from lib.jsonl import read_jsonl, write_jsonl
from lib.paths import atomic_write_text, merged_model_dir
from lib.plan.recipe_plan import kv_cache_bytes
from lib.run_config import RunConfig, read_manifest, stage_file, write_manifest

STAGE = "05_eval_edge"


def read_heldout(cfg: RunConfig) -> list[dict]:
    """The held-out rows 01_data set aside (never trained on)."""
    return read_jsonl(stage_file(cfg, "01_data", "heldout"))


def write_prompts(cfg: RunConfig, heldout: list[dict]) -> Path:
    """Held-out prompts as the model will see them (template messages + reference answer): the "heldout"
    benchmark's prompts file. Each is marked when the tokenizer's template opens `<think>` in its generation prompt
    (for the reader; the judge asks the GGUF's own template, `lib.evaluate.generate`)."""
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


def budget_runs(runs: list[dict], budgets: list[int], benchmark: str, files: list[str]) -> list[dict]:
    """Each distilled GGUF named in `files` (all when empty; never the base, the ablation or the merged HF model)
    once more per think budget, on one benchmark."""
    chosen = [f"distilled-{f}" for f in files] or [r["label"] for r in runs if r["label"].startswith("distilled-")]
    return [{**run, "label": f"{run['label']}-think{budget}", "think_budget": budget, "benchmarks": [benchmark]}
            for budget in budgets for run in runs
            if run["label"] in chosen and not run["label"].endswith("-no-repeat-penalty")
            and run.get("engine") != TRANSFORMERS]


def budget_curve(results: list[dict], benchmark: str) -> list[dict]:
    """Per distilled file given budgets and per think budget (None = no budget) on `benchmark`: pass@1, how often
    the thought closed by itself and how often the budget closed it, the mean think length of closed thoughts and
    the mean tokens of all answers (pure)."""
    budgeted = {r["label"].removesuffix(f"-think{r['think_budget']}") for r in results if r.get("think_budget")}
    rows = []
    for r in results:
        base_label = r["label"].removesuffix(f"-think{r['think_budget']}") if r.get("think_budget") else r["label"]
        if r["benchmark"] != benchmark or base_label not in budgeted:  # only files that have budget runs
            continue
        budget = r.get("think_budget")
        forced = r.get("forced_close_rate") or 0.0
        rows.append({"file": base_label, "budget": budget,
                     "pass@1": r["pass@1"], "closed_by_itself": round(r["closure_rate"] - forced, 4),
                     "closed_by_budget": forced, "think_tokens_mean": r["think_tokens"]["mean"],
                     "completion_tokens_mean": r["completion_tokens"]["mean"]})
    return sorted(rows, key=lambda row: (row["file"], row["budget"] is None, row["budget"] or 0))


def edge_memory_row(size: dict, kv_bytes: int) -> dict:
    """What one exported file needs on a device: its weights (real bytes, or the estimate) and the KV cache."""
    weights = size["real_bytes"] or size["estimated_bytes"]
    return {"file": size["file"], "weights_bytes": weights, "kv_cache_bytes": kv_bytes,
            "total_gib": round((weights + kv_bytes) / 2**30, 2)}


def base_q8_0(path: Path, out: Path, n_threads: int) -> Path:
    """A Q8_0 of the base model's GGUF beside it in `out` (made once)."""
    target = out / f"{path.name.removesuffix('.gguf').removesuffix('-F16')}-Q8_0.gguf"
    return target if target.is_file() else quantize_gguf(path, target, "Q8_0", n_threads)


def fitting_files(files: dict[str, Path], kv_bytes: int, available_bytes: int, quantize=None
                  ) -> tuple[dict[str, Path], dict[str, str]]:
    """The models this machine can judge from RAM (weights + KV cache within 90 % of what is free; a GGUF file or
    the merged HF folder), and why each other one is not. A base model too large as F16 is judged from a Q8_0 of it
    instead (`quantize(path) -> path`; the results name the file judged)."""
    kept, skipped = {}, {}
    for label, path in files.items():
        need = weights_bytes(path) + kv_bytes
        if need > 0.9 * available_bytes and label == "base" and quantize is not None:
            path = quantize(path)
            need = weights_bytes(path) + kv_bytes
        if need > 0.9 * available_bytes:
            skipped[label] = (f"{path.name} needs {need / 2**30:.1f} GiB (weights + KV cache), this machine has "
                              f"{available_bytes / 2**30:.1f} GiB free: not judged")
        else:
            kept[label] = path
    return kept, skipped


def benchmark_sources(recipe, prompts: Path) -> dict[str, tuple[str, int | None]]:
    """{benchmark: (what `load_benchmark` reads, how many problems or None for all)} from `eval_benchmarks`."""
    return {name: (str(prompts), None) if name == HELDOUT else (name, size or None)
            for name, size in recipe.eval_benchmarks.items()}


def unjudgeable_references(prompts: Path) -> list[str]:
    """Ids of held-out rows whose reference answer math-verify cannot read: they can never count as right."""
    return [p["id"] for p in load_benchmark(str(prompts))
            if p["answer"] is None or not judge_sample(f"The answer is {p['answer']}.", p["answer"])["correct"]]


def run_eval(cfg: RunConfig, heldout: list[dict]) -> dict:
    """Evaluate the base model and the exported files (through the run's mode); the edge memory plan of each."""
    recipe, out = cfg.recipe, cfg.stage_dir(STAGE)
    prompts = write_prompts(cfg, heldout)
    benchmarks = benchmark_sources(recipe, prompts)
    problems = {name: len(load_benchmark(source, n, recipe.seed)) for name, (source, n) in benchmarks.items()}
    kv = kv_cache_bytes(cfg.mode.architecture(), recipe.eval_n_ctx)
    export_facts = read_manifest(cfg, "04_merge_export")["facts"]
    sizes = export_facts["sizes"]
    edge_memory = [edge_memory_row(size, kv) for size in sizes]
    files = cfg.mode.judged_files(cfg, out)  # the base model and 04's files (none in a dry-run)
    not_judged, available = {}, psutil.virtual_memory().available
    if files and not gpu_offload():  # a 22B's F16 files do not fit a 32 GB machine: judged from its quants
        # each file's engine holds eval_sequences caches, eval_parallel files load at once
        files, not_judged = fitting_files(files, kv * recipe.eval_sequences * recipe.eval_parallel, available,
                                          lambda path: base_q8_0(path, out, recipe.eval_n_threads))
    runs = evaluation_runs(files, recipe.eval_sampling(), recipe.eval_ablation_file)
    first = next(iter(benchmarks))
    merged = merged_model_dir(cfg.run_dir)
    if recipe.eval_merged_model and (merged / "config.json").is_file():  # the ladder's top rung (none: dry-run)
        import torch  # where transformers will put it

        # loaded as stored, in this process, on the CPU unless CUDA is there
        fits, skipped = ({MERGED_LABEL: merged}, {}) if torch.cuda.is_available() else fitting_files(
            {MERGED_LABEL: merged}, 0, available)
        not_judged |= skipped
        if fits:  # on the first benchmark only: CPU time
            runs.append({"label": MERGED_LABEL, "path": merged, "sampling": recipe.eval_sampling(),
                         "engine": TRANSFORMERS, "benchmarks": [first]})
    budgeted = budget_runs(runs, recipe.eval_think_budgets, first, recipe.eval_think_budget_files)
    judged = cfg.mode.evaluate(cfg, runs + budgeted, benchmarks, out)
    results = [r for r in judged if r.get("think_budget") is None]
    curve = budget_curve(results + [r for r in judged if r.get("think_budget") is not None], first)
    quant_ladder = {name: ladder(samples_by_file(out, results, name), recipe.eval_max_drop) for name in benchmarks}
    flagged = [f"{row['file']} on {name}: {row['metric']} drops {100 * row['drop']['mean']:.0f} points from "
               f"{row['reference_file'].removeprefix('distilled-')} "
               f"(limit {100 * row['max_drop']:.0f})" for name, rows in quant_ladder.items() for row in rows
               if row["flagged"]]
    atomic_write_text(out / "results.json", json.dumps({"recipe": recipe.name, "results": judged,
                                                        "ladder": quant_ladder, "flagged": flagged,
                                                        "think_budget": curve}, indent=2))
    facts = {"mode": cfg.mode.name, "prompts": len(heldout), "problems": problems, "k": recipe.eval_k,
             "unjudgeable_references": unjudgeable_references(prompts), "kv_cache_bytes": kv,
             "judged_files": {label: path.name for label, path in files.items()}, "not_judged": not_judged,
             "not_judged_by_recipe": [q for q in recipe.gguf_files() if q not in recipe.judged_files()],
             "edge_memory": edge_memory, "results": results, "ladder": quant_ladder, "flagged": flagged,
             "think_budget": curve, "example": first_output(out, results)}
    # the export folder's README.md, now with this table
    card = write_model_card(cfg, sizes, judged, export_facts.get("lora_adapter"))
    write_manifest(cfg, STAGE, {"prompts": prompts} | {k: str(v) for k, v in files.items()},
                   {"results": out / "results.json"} | ({"model_card": card} if card else {}), facts)
    return facts


def samples_by_file(out: Path, results: list[dict], benchmark: str) -> dict[str, list[dict]]:
    """{file label: its judged samples} on one benchmark, in the order the files were judged."""
    return {r["label"]: read_jsonl(out / f"{r['label']}.{benchmark}.samples.jsonl")
            for r in results if r["benchmark"] == benchmark}


def first_output(out: Path, results: list[dict]) -> dict | None:
    """The first sample of the distilled Q8_0 on the first benchmark (else the last file judged), for the notebook;
    None if none ran."""
    if not results:
        return None
    first = [r for r in results if r["benchmark"] == results[0]["benchmark"]]
    chosen = next((r for r in first if r["label"].endswith("Q8_0")), first[-1])
    sample = read_jsonl(out / f"{chosen['label']}.{chosen['benchmark']}.samples.jsonl")[0]
    return {"file": chosen["label"], "benchmark": chosen["benchmark"], "id": sample["problem_id"],
            "answer": sample["answer_key"], "correct": sample["correct"], "closed_think": sample["closed_think"],
            "output": sample["text"]}
