"""Summarise a finished run from its stage manifests into `runs/<recipe>/report.md` (+ report.json).

Usage: ``python -m lib.report smollm2_135m``
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from lib.evaluate.metrics import percent_interval
from lib.paths import atomic_write_text, run_dir
from lib.run_config import STAGES


def collect(folder: Path) -> dict:
    """Facts of every stage manifest present in `folder`, plus stage wall times if recorded."""
    facts = {}
    for stage in STAGES:
        path = folder / stage / "manifest.json"
        if path.is_file():
            facts[stage] = json.loads(path.read_text())["facts"]
    timings = folder / "timings.json"
    return {"stages": facts, "timings": json.loads(timings.read_text()) if timings.is_file() else {}}


def merge_line(export: dict) -> str:
    """One line for 04's merge check, whichever ran: logits (in memory) or re-derived tensors (shard by shard)."""
    if export.get("check") == "per_tensor":
        return (f"Merge ({export.get('strategy')}): {export['tensors_checked']} merged tensors re-derived, "
                f"max difference {export['max_difference_over_bound']:.2f} of one {export.get('dtype')} rounding")
    return (f"Merge ({export.get('strategy', 'in_memory')}): max |logit difference| = "
            f"{export['max_logit_difference']:.2e} (tolerance {export['tolerance']:.2e}: "
            f"{export.get('tolerance_rule', '')})")


def render_markdown(recipe: str, report: dict) -> str:
    """The human-readable report (pure: tested on a hand-made report dict)."""
    stages, timings = report["stages"], report["timings"]
    lines = [f"# Run report: {recipe}", ""]
    if timings:
        lines += [f"Wall time: {sum(timings.values()) / 60:.1f} min "
                  f"({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())})", ""]
    data = stages.get("01_data", {})
    if data:
        audit = data["train_audit"]
        lines += [f"Data: {data['train_rows']} training rows ({audit['schema']}, {audit['rows_read']} rows read), "
                  f"{data['heldout_rows']} held-out prompts; rejected or removed: "
                  f"{audit['rejected_per_reason'] or 'none'}", ""]
    mask = stages.get("02_masking", {})
    if mask:
        lines += [f"Masks: {mask['examples']} examples, {mask['trained_fraction']:.1%} of tokens trained, "
                  f"{mask['all_masked']} fully masked, {mask['dropped_overlong']} dropped over max_length "
                  f"{mask['max_length']} ({mask['length_policy']['policy']}), {mask['cannot_mask']} the template "
                  "could not mask", ""]
    train = stages.get("03_train", {})
    if train.get("mode") == "trained":
        lines += [f"Training ({train['backend']}): {train['steps']} steps in {train['train_seconds']:.0f} s, "
                  f"loss {train['first_loss']:.3f} -> {train['last_loss']:.3f}, "
                  f"{train['trainable_params']:,} trainable parameters", ""]
        if train.get("cpu_memory"):
            lines += [memory_line(train["cpu_memory"]), ""]
    export = stages.get("04_merge_export", {})
    if any(s["real_bytes"] for s in export.get("sizes", [])):
        lines += [merge_line(export), "", "| file | real bytes | estimated | error |", "|---|---|---|---|"]
        lines += [f"| {s['file']} | {s['real_bytes']:,} | {s['estimated_bytes']:,} | {s['error_pct']:+.2f} % |"
                  for s in export["sizes"] if s["real_bytes"] is not None] + [""]
    evaluation = stages.get("05_eval_edge", {})
    if evaluation.get("results"):
        sampling = evaluation["results"][0].get("sampling", {})
        lines += [f"Evaluation (llama.cpp, sampling {sampling}, k = {evaluation.get('k', 1)} per problem, "
                  "math-verify):", ""] + evaluation_table(evaluation["results"])
    grpo = stages.get("06_grpo", {})
    if grpo.get("steps"):
        lines += ["", f"GRPO: {grpo['steps']} steps in {grpo['seconds']:.0f} s ({grpo['seconds_per_step']} s a step), "
                  f"{grpo['prompts']} prompts, from {grpo['start_from']}; its files on the same prompts:", ""]
        lines += evaluation_table(grpo.get("results", []))
    return "\n".join(lines) + "\n"


def evaluation_table(results: list[dict]) -> list[str]:
    """Markdown lines of one table row per judged (file, benchmark): 05's files, or 06's."""
    return ["| model | benchmark | pass@1 [95 % CI] | closed </think> | hit max tokens | loops | think tokens p50 "
            "| tok/s | peak RSS MiB |", "|---|---|---|---|---|---|---|---|---|"] + [
        f"| {r['label']} | {r['benchmark']} ({r['problems']}) | {percent_interval(r['pass@1'])} | "
        f"{r['closure_rate']:.0%} | {r['truncation_rate']:.0%} | {r['loop_rate']:.0%} | "
        f"{r['think_tokens']['p50'] if r['think_tokens']['p50'] is not None else '–'} | "
        f"{r['tokens_per_second']} | {r['peak_rss_mib']} |" for r in results]


def tiny_report(folder: Path) -> dict:
    """What a --tiny run proved, from its manifests: the model that stood in for the recipe's and the CUDA-only
    parts replaced (named by the run itself), every GGUF the recipe names written or not, and the files judged."""
    stages = collect(folder)["stages"]
    config = next((s["config"] for s in _manifests(folder)), {})
    train, export, evaluation, grpo = (stages.get(s, {}) for s in ("03_train", "04_merge_export", "05_eval_edge",
                                                                   "06_grpo"))
    written = sorted(s["file"] for s in export.get("sizes", []) if s.get("real_bytes"))
    expected = [s["file"] for s in export.get("sizes", [])]
    return {"recipe": config.get("recipe"), "tiny_model": config.get("model"), "teacher": config.get("teacher"),
            "tokenizer": config.get("tokenizer"), "stand_ins": config.get("stand_ins", train.get("stand_ins")),
            "backend": train.get("backend"), "steps": train.get("steps"),
            "loss": [train.get("first_loss"), train.get("last_loss")],
            "memory": train.get("cpu_memory"), "merge": {k: v for k, v in export.items() if k != "sizes"},
            "gguf_expected": expected, "gguf_written": written, "all_gguf_written": bool(expected)
            and sorted(expected) == written, "judged": _labels(evaluation),
            # 06 where the recipe has a grpo: section: its steps, the merge check of its adapter, its judged files
            "grpo": {"steps": grpo.get("steps"), "start_from": grpo.get("start_from"),
                     "merge_max_logit_difference": grpo.get("merge", {}).get("max_logit_difference"),
                     "judged": _labels(grpo)} if grpo else None,
            "timings": collect(folder)["timings"]}


def _labels(facts: dict) -> list[str]:
    """The files a stage judged, once each (a result per file and benchmark)."""
    return list(dict.fromkeys(r["label"] for r in facts.get("results", [])))


def memory_line(memory: dict) -> str:
    """03's CPU memory check in words: the plan of the largest micro-batch trained against the measured peak."""
    return (f"Memory (CPU): largest micro-batch {memory['largest_micro_batch_tokens']:,} tokens, planned "
            f"{memory['plan_gib']:.2f} GiB, measured peak RSS {memory['peak_rss_gib']:.2f} GiB "
            f"(plan {100 * memory['plan_error']:+.1f} %)")


def _manifests(folder: Path):
    for stage in STAGES:
        path = folder / stage / "manifest.json"
        if path.is_file():
            yield json.loads(path.read_text())


def main(recipe: str) -> int:
    folder = run_dir(recipe)
    report = collect(folder)
    atomic_write_text(folder / "report.json", json.dumps(report, indent=2))
    atomic_write_text(folder / "report.md", render_markdown(recipe, report))
    print(render_markdown(recipe, report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "smollm2_135m"))
