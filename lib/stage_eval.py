"""Stage 05: judge the base model and every exported GGUF on held-out prompts with llama.cpp.

Usage: ``results = run_eval(cfg, heldout)``
"""
from __future__ import annotations

import json
from pathlib import Path

from lib.answers import answers_match
from lib.architectures import load_architecture
from lib.reasoning_data import prompt_messages, write_jsonl
from lib.run_config import RunConfig, read_manifest, write_manifest

STAGE = "05_eval_edge"


def write_prompts(cfg: RunConfig, heldout: list[dict]) -> Path:
    """Held-out prompts as the model will see them (template messages + reference answer)."""
    path = cfg.stage_dir(STAGE) / "prompts.jsonl"
    write_jsonl(path, [{"id": row["id"], "messages": prompt_messages(row, cfg.recipe.system_prompt),
                        "answer": row.get("answer")} for row in heldout])
    return path


def kv_cache_bytes(architecture: str, n_ctx: int) -> int:
    """llama.cpp's default f16 K and V cache for `n_ctx` tokens: 2 tensors x layers x ctx x kv_dim x 2 bytes."""
    arch = load_architecture(architecture)
    return 2 * arch.num_hidden_layers * n_ctx * arch.num_key_value_heads * arch.head_dim * 2


def base_gguf(cfg: RunConfig) -> Path:
    """The untrained model as a GGUF: the packaged file itself, or a fresh F16 conversion of the base."""
    from lib.base_model import PACKAGED_GGUF_MODELS, packaged_gguf, resolve_base_model
    from lib.gguf_export import convert_to_gguf

    if cfg.model_source in PACKAGED_GGUF_MODELS:
        return packaged_gguf(cfg.model_source)
    target = cfg.stage_dir(STAGE) / f"{cfg.recipe.name}-base-F16.gguf"
    return target if target.is_file() else convert_to_gguf(Path(resolve_base_model(cfg.model_source)), target)


def evaluation_runs(files: dict[str, Path], sampling: dict, ablation_file: str = "") -> list[dict]:
    """One run per file with the recipe's sampling, plus `distilled-<ablation_file>` once more without the
    repeat penalty when the recipe uses one (pure: which runs, under which labels)."""
    runs = [{"label": label, "path": path, "sampling": sampling} for label, path in files.items()]
    if ablation_file and sampling.get("repeat_penalty", 1.0) != 1.0:
        label = f"distilled-{ablation_file}"
        runs.append({"label": f"{label}-no-repeat-penalty", "path": files[label],
                     "sampling": {**sampling, "repeat_penalty": 1.0}})
    return runs


def run_eval(cfg: RunConfig, heldout: list[dict]) -> dict:
    """Real run: evaluate base + exported files. Dry-run: check the prompts and show the edge memory plan."""
    recipe, out = cfg.recipe, cfg.stage_dir(STAGE)
    prompts = write_prompts(cfg, heldout)
    unparseable = [r["id"] for r in heldout if r.get("answer") is None or not answers_match(r["answer"], r["answer"])]
    kv = kv_cache_bytes(recipe.architecture, recipe.eval_n_ctx)
    if cfg.model_source is None:
        exports = read_manifest(cfg, "04_merge_export")["facts"]["files"]
        facts = {"mode": "dry-run (no model run)", "prompts": len(heldout), "unparseable_references": unparseable,
                 "edge_memory": [{"file": f["file"], "weights_bytes": f["estimated_bytes"], "kv_cache_bytes": kv,
                                  "total_gib": round((f["estimated_bytes"] + kv) / 2**30, 2)} for f in exports]}
        write_manifest(cfg, STAGE, {"prompts": prompts}, {}, facts)
        return facts
    from concurrent.futures import ThreadPoolExecutor

    from lib.edge_eval import evaluate_gguf, speed_benchmark

    files = {"base": base_gguf(cfg)} | {
        f"distilled-{q}": Path(p) for q, p in read_manifest(cfg, "04_merge_export")["facts"]["files"].items()}
    runs = evaluation_runs(files, recipe.eval_sampling(), recipe.eval_ablation_file)
    plain = recipe.plain_format if recipe.chat_format == "plain" else ""
    # accuracy runs may share the CPU (eval_parallel files at a time, threads split between them) ...
    threads = max(1, recipe.eval_n_threads // recipe.eval_parallel)
    with ThreadPoolExecutor(max_workers=recipe.eval_parallel) as pool:
        results = list(pool.map(lambda run: evaluate_gguf(run["path"], prompts, out, run["label"],
                                                          recipe.eval_max_tokens, recipe.eval_n_ctx, threads, plain,
                                                          run["sampling"]), runs))
    # ... but speed is measured one file at a time, as a device running only this model would see it
    speed_threads = recipe.eval_speed_threads or recipe.eval_n_threads
    for result, run in zip(results, runs):
        result["tokens_per_second_shared_cpu"] = result.pop("tokens_per_second")
        result.update(speed_benchmark(run["path"], prompts, out, run["label"], n_ctx=recipe.eval_n_ctx,
                                      n_threads=speed_threads, plain_prompt_format=plain,
                                      sampling=run["sampling"]))
    (out / "results.json").write_text(json.dumps({"recipe": recipe.name, "results": results}, indent=2))
    facts = {"mode": "evaluated", "prompts": len(heldout), "kv_cache_bytes": kv, "results": results,
             "example": _first_output(out, next((r["label"] for r in results if r["label"].endswith("Q8_0")),
                                                 results[-1]["label"]))}
    write_manifest(cfg, STAGE, {"prompts": prompts} | {k: str(v) for k, v in files.items()},
                   {"results": out / "results.json"}, facts)
    return facts


def _first_output(out: Path, label: str) -> dict:
    from lib.reasoning_data import read_jsonl

    record = read_jsonl(out / f"{label}.outputs.jsonl")[0]
    return {k: record[k] for k in ("id", "reference", "predicted", "correct", "closed_think", "output")} | {
        "file": label}


def results_table(facts: dict):
    """A Markdown table of the stage's facts: per-file results, or the dry-run's edge memory plan."""
    from IPython.display import Markdown

    if "results" in facts:
        head = ("| file | bytes | closed `</think>` | opened | accuracy | mean think tokens | hit max_tokens | "
                "tok/s | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|\n")
        rows = [f"| {r['label']} ({r['file']}) | {r['file_bytes']:,} | {r['closure_rate']:.0%} | "
                f"{r['opened_think_rate']:.0%} | {r['accuracy']:.0%} | {r['mean_think_tokens']} | "
                f"{r['hit_max_tokens']} | {r['tokens_per_second']} | {r['peak_rss_mib']} |" for r in facts["results"]]
        return Markdown(head + "\n".join(rows))
    head = "| file | weights bytes (est.) | KV cache bytes | total GiB |\n|---|---|---|---|\n"
    rows = [f"| {e['file']} | {e['weights_bytes']:,} | {e['kv_cache_bytes']:,} | {e['total_gib']} |"
            for e in facts["edge_memory"]]
    return Markdown(f"{facts['prompts']} prompts checked, unparseable references: "
                    f"{facts['unparseable_references'] or 'none'}\n\n" + head + "\n".join(rows))


def results_chart(facts: dict, path: Path, title: str):
    """Bar chart of closure rate and accuracy per file (PNG for display), or a note in a dry-run."""
    from IPython.display import Image, Markdown

    if "results" not in facts:
        return Markdown("_No chart: no model was run (dry-run)._")
    return Image(filename=str(_bar_chart(facts["results"], path, title)))


def _bar_chart(results: list[dict], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["label"].replace("-no-", "\nno-") for r in results]  # the ablation's long label on two lines
    x = range(len(labels))
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.bar([i - 0.2 for i in x], [100 * r["closure_rate"] for r in results], 0.4, label="</think> closed %")
    ax.bar([i + 0.2 for i in x], [100 * r["accuracy"] for r in results], 0.4, label="answer correct %")
    for i, r in enumerate(results):
        ax.annotate(f"{r['tokens_per_second']:.0f} tok/s", (i, 102), ha="center", fontsize=8)
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set(ylim=(0, 112), ylabel="% of held-out prompts", title=title)
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
