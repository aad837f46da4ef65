"""Stage 06: GRPO on 03's adapter, then 04's merge and export and 05's judgement of the result, side by side.

Usage: ``facts = run_grpo(cfg, grpo_prompts(cfg), restart=False)``; ``rows = side_by_side(cfg, facts)``

Reads only saved artifacts: 01's training rows (the prompts; the held-out split is never read for training), 03's
adapter, 05's prompts file and results (base and SFT, judged already on the very prompts 06 judges). Writes under
`runs/<recipe>/06_grpo/`: the adapter and its log, the merged model and GGUF files (named `<recipe>-grpo-*.gguf`),
the judged samples and a manifest.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from lib.conversation import prompt_key
from lib.data.pipeline import DataPolicy, run_pipeline
from lib.data.rows import source_id_prefix
from lib.data.schemas import convert_rows
from lib.data.sources import iter_records

from lib.evaluate.ladder import METRICS, paired_difference
from lib.evaluate.stage import benchmark_sources, evaluation_runs, samples_by_file
from lib.grpo.rewards import correctness, format_reward
from lib.grpo.settings import GrpoSettings, grpo_settings
from lib.grpo.train import answerable, prompt_rows
from lib.jsonl import read_jsonl
from lib.paths import atomic_write_text
from lib.export.stage import merge_probe_texts
from lib.recipe import recipe_source
from lib.run_config import RunConfig, read_manifest, stage_file, write_manifest
from lib.think import assistant_text

STAGE = "06_grpo"
GRPO_LABEL = "grpo"  # 06's files are judged as grpo-<quant>, beside 05's base and distilled-<quant>


class NoGrpoSection(ValueError):
    """The recipe has no `grpo:` section: there is nothing for 06 to do."""


def recipe_settings(cfg: RunConfig) -> GrpoSettings:
    if not cfg.recipe.grpo:
        raise NoGrpoSection(f"{recipe_source(cfg.recipe)}: no grpo: section, so 06 has nothing to do: add one (see "
                            "params/smollm2_135m_arithmetic.yaml) or run stages 01-05 only")
    return grpo_settings(cfg.recipe.grpo)


def source_rows(cfg: RunConfig) -> tuple[list[dict], str, dict]:
    """(the rows GRPO's prompts come from, where from, what was dropped and why): 01's training rows (decontaminated
    there), or `grpo.dataset_path`'s through 01's pipeline (`verifiable_rows`)."""
    settings = recipe_settings(cfg)
    if settings.dataset_path:
        return verifiable_rows(cfg, settings)
    rows = read_jsonl(stage_file(cfg, "01_data", "train"))
    return rows, "01's training rows", {"rows": len(rows), "without a reference answer": len(rows) -
                                        len(answerable(rows))}


def grpo_prompts(cfg: RunConfig, rows: list[dict], source: str) -> list[dict]:
    """06's prompts from `source_rows`: `grpo.prompts` of them drawn with the recipe's seed. Rows without a
    reference answer cannot be rewarded: none at all is an error naming the key to set."""
    settings, recipe = recipe_settings(cfg), cfg.recipe
    prompts = prompt_rows(rows, settings.prompts, recipe.seed, recipe.system_prompt,
                          recipe.plain_format if recipe.chat_format == "plain" else "")
    if not prompts:
        raise ValueError(f"{recipe_source(recipe)}: grpo: {source} hold no row with a reference answer ({len(rows)} "
                         "rows), so no completion can be rewarded for being right: set grpo.dataset_path (and "
                         "grpo.dataset_format) to a set with answers, e.g. data/gsm8k/train.jsonl.gz (gsm8k)")
    return prompts


def verifiable_rows(cfg: RunConfig, settings: GrpoSettings) -> tuple[list[dict], str, dict]:
    """`grpo.dataset_path` through 01's pipeline (schema, answer verification, duplicates, decontamination against
    the recipe's evaluation sets), then without any row whose prompt is one of 01's held-out prompts; with the
    counts of every row left out and why."""
    policy = dataclasses.replace(DataPolicy.from_recipe(cfg.recipe), schema=settings.dataset_format,
                                 field_mapping={})
    records = iter_records(settings.dataset_path, "train", "")
    converted = convert_rows(records, policy.schema, {}, source_id_prefix(settings.dataset_path))
    # twice the prompts asked for (the held-out filter below may remove some), at most the rows the run's mode reads
    # from a training source (a dry-run's or --tiny run's few; a real run's train_rows)
    limit = 2 * settings.prompts
    if cfg.mode.train_rows:
        limit = min(limit, cfg.mode.train_rows) if limit else cfg.mode.train_rows
    audit = run_pipeline(converted, policy, limit=limit, source=settings.dataset_path)
    held = {prompt_key(row) for row in read_jsonl(stage_file(cfg, "01_data", "heldout"))}
    rows = [row for row in audit.kept if prompt_key(row) not in held]
    report = audit.report
    return rows, settings.dataset_path, {
        "rows read": report.rows_read, "kept by 01's pipeline": len(audit.kept),
        "rejected or removed by 01's pipeline": dict(report.rejected.most_common()),
        "removed: a held-out prompt": len(audit.kept) - len(rows),
        "without a reference answer": len(rows) - len(answerable(rows))}


class RewardCheckFailed(ValueError):
    """A verified trace of the prompts' own source does not earn full rewards: the rewards would punish it."""


def reward_check(train_rows: list[dict], limit: int = 50) -> dict:
    """The rewards on 01's own traces with a reference answer, rendered as a completion would be: every verified
    trace must be correct and well formed (a reward that fails the training data would punish exactly what SFT taught)."""
    scores = {"traces": 0, "correctness": 0.0, "format": 0.0}
    for row in answerable(train_rows)[:limit]:
        reply = row["messages"][-1]
        text = assistant_text(reply["think"], reply["answer"])
        scores["traces"] += 1
        scores["correctness"] += correctness(text, str(row["answer"]))
        scores["format"] += format_reward(text)
    if not scores["traces"] or scores["correctness"] != scores["traces"] or scores["format"] != scores["traces"]:
        raise RewardCheckFailed(f"the rewards on the first verified traces the prompts come from: {scores} (each sum "
                                "must equal the number of traces): a reward that fails the training data would "
                                "punish what SFT taught; check grpo.dataset_format and the recipe's chat format")
    return scores


def run_grpo(cfg: RunConfig, prompts: list[dict], restart: bool = False, extra_facts: dict | None = None) -> dict:
    """Train (through the run's mode), then merge, export and judge the result on 05's held-out prompts.
    `extra_facts` (the prompts' source counts, the reward check) go into the manifest as they are."""
    recipe, out = cfg.recipe, cfg.stage_dir(STAGE)
    settings = recipe_settings(cfg)
    # 03's adapter (a dry-run's 03 writes none: its mode plans without one)
    has_adapter = "adapter" in read_manifest(cfg, "03_train")["produced"]
    sft_adapter = stage_file(cfg, "03_train", "adapter") if settings.start_from == "sft" and has_adapter else None
    facts = {"mode": cfg.mode.name, "settings": settings.__dict__ | {"weights": settings.weights},
             "prompts": len(prompts), "prompts_from": settings.dataset_path or "01_data/train.jsonl",
             "start_from": settings.start_from} | (extra_facts or {})
    trained, produced = cfg.mode.grpo(cfg, settings, prompts, out, sft_adapter, restart)
    facts |= trained  # steps, seconds, backend (real, tiny) or the memory plan (dry-run)
    adapter = produced.get("adapter")
    if adapter:  # 04's merge (checked) and GGUF export, 05's judgement, of 06's adapter
        merged, folder = out / "merged", out / "gguf"
        probe_texts = merge_probe_texts(read_jsonl(stage_file(cfg, "01_data", "train")))  # as 04 probes 03's merge
        facts["merge"] = cfg.mode.merge(cfg, merged, probe_texts, adapter=adapter)
        files = cfg.mode.convert(cfg, merged, folder, name=f"{recipe.name}-{GRPO_LABEL}")
        produced |= files
        prompts_file = heldout_prompts(cfg)
        results_05 = stage_file(cfg, "05_eval_edge", "results")  # 05 must be current: StaleStage otherwise
        # the files `Recipe.judged_files` names, as 05 judges 04's export
        runs = evaluation_runs({f"{GRPO_LABEL}-{q}": files[q] for q in recipe.judged_files()}, recipe.eval_sampling())
        facts["results"] = cfg.mode.evaluate(cfg, runs, benchmark_sources(recipe, prompts_file), out)
        summary = {"recipe": recipe.name, "results": facts["results"]}
        # the judged results first: a comparison that fails (05's samples gone) must not lose them
        atomic_write_text(out / "results.json", json.dumps(summary, indent=2))
        facts["gain_over_sft"] = summary["gain_over_sft"] = grpo_gain(cfg, facts)
        atomic_write_text(out / "results.json", json.dumps(summary, indent=2))
        produced["results"] = out / "results.json"
    consumed = {"train": stage_file(cfg, "01_data", "train"), "heldout": stage_file(cfg, "01_data", "heldout")}
    if settings.dataset_path:
        consumed["grpo_dataset"] = settings.dataset_path
    if sft_adapter and (sft_adapter / "adapter_model.safetensors").is_file():
        consumed["sft_adapter"] = sft_adapter / "adapter_model.safetensors"
    if adapter:
        consumed |= {"prompts": prompts_file, "results_05": results_05}
    write_manifest(cfg, STAGE, consumed, produced, facts)
    return facts


def heldout_prompts(cfg: RunConfig) -> Path:
    """05's prompts file: 06 judges on the very prompts 05 judged the base and the SFT files on."""
    return cfg.run_dir / read_manifest(cfg, "05_eval_edge")["consumed"]["prompts"]


def side_by_side(cfg: RunConfig, facts: dict) -> list[dict]:
    """base → SFT → SFT+GRPO: 05's results for the base and the SFT files, then 06's, on the same benchmarks."""
    stage_file(cfg, "05_eval_edge", "results")  # a 05 computed from files written anew since is an error
    before = read_manifest(cfg, "05_eval_edge")["facts"].get("results", [])
    return [r for r in before if r.get("think_budget") is None and (
        r["label"] == "base" or (r["label"].startswith("distilled-") and not r["label"].endswith("no-repeat-penalty")))
            ] + facts.get("results", [])


def gain_over_sft(sft: dict[str, list[dict]], grpo: dict[str, list[dict]]) -> list[dict]:
    """What GRPO changed, per file and metric: SFT+GRPO minus SFT (the file of the same quant, judged on the same
    problems with the same seeds) with a 95 % interval from a paired bootstrap over problems — the question 06 asks,
    which two overlapping independent intervals cannot answer. `sft`/`grpo`: {file label: judged samples} on one
    benchmark, as 05's `distilled-<quant>` and 06's `grpo-<quant>`; a quant judged by 06 only has no row."""
    rows = []
    for label, samples in grpo.items():
        quant = label.removeprefix(f"{GRPO_LABEL}-")
        if f"distilled-{quant}" not in sft:
            continue
        for metric, field in METRICS.items():
            problems, after, before, change = paired_difference(samples, sft[f"distilled-{quant}"], field)
            rows.append({"file": quant, "metric": metric, "problems": problems, "SFT": before, "SFT+GRPO": after,
                         "change": change})
    return rows


def grpo_gain(cfg: RunConfig, facts: dict) -> list[dict]:
    """`gain_over_sft` on every benchmark 06 judged, from 05's and 06's saved samples."""
    before = read_manifest(cfg, "05_eval_edge")["facts"].get("results", [])
    after = facts.get("results", [])
    rows = []
    for benchmark in dict.fromkeys(r["benchmark"] for r in after):
        sft = samples_by_file(cfg.stage_dir("05_eval_edge"), [r for r in before if r.get("think_budget") is None],
                              benchmark)
        rows += [{"benchmark": benchmark, **row} for row in
                 gain_over_sft(sft, samples_by_file(cfg.stage_dir(STAGE), after, benchmark))]
    return rows


def reward_curves(log_history: list[dict]) -> list[dict]:
    """Per logged step: each reward's mean, the total, KL, completion length and the share cut at the limit."""
    keys = {"reward": "reward", "correctness": "rewards/correctness/mean", "format": "rewards/format/mean",
            "overlong": "rewards/overlong/mean", "kl": "kl", "length": "completions/mean_length",
            "clipped": "completions/clipped_ratio"}
    return [{"step": entry["step"], **{name: entry.get(key) for name, key in keys.items()}}
            for entry in log_history if "reward" in entry]


def grpo_log(cfg: RunConfig) -> list[dict]:
    path = cfg.run_dir / STAGE / "grpo_log.json"
    return json.loads(Path(path).read_text()) if path.is_file() else []
