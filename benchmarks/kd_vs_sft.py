"""Logit distillation against SFT on a CPU: the KD student of `smollm2_135m_kd` next to the SFT student of the demo
(`smollm2_135m`, its teacher), each judged on its exported GGUF files by 05 on the same held-out prompts.

Usage: ``make bench-kd`` (runs both recipes when their runs are missing, then this), or after both runs
``.venv/bin/python benchmarks/kd_vs_sft.py``.

The two students start from the same untrained SmolLM2-135M-Instruct with the same LoRA adapters, seed, learning rate and
schedule; they differ in their loss (CE on the traces vs 0.5·T²·KL to the demo's distilled model + 0.5·CE) and in
how many rows they see: the KD recipe trains on fewer rows so that its training time (teacher forward included)
is about the SFT run's — the comparison is at equal training time, as measured in both runs' 03 manifests. Prints
one Markdown table and writes it with the JSON behind it to ``runs/benchmarks/kd_vs_sft.{md,json}``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `lib` when run as a plain script

from lib.evaluate.metrics import percent_interval  # noqa: E402
from lib.paths import atomic_write_text, run_dir, runs_root  # noqa: E402

SFT, KD = "smollm2_135m", "smollm2_135m_kd"
FILES = ("F16", "Q8_0", "Q4_K_M")
ABLATION = "Q8_0"


def manifest(recipe: str, stage: str) -> dict:
    path = run_dir(recipe) / stage / "manifest.json"
    if not path.is_file():
        sys.exit(f"{path} not found: run `python -m lib run {recipe}` first (make bench-kd runs both recipes)")
    return json.loads(path.read_text())


def judged(recipe: str, label: str) -> dict:
    """One file's summary on 01's held-out rows (the benchmark both recipes judge)."""
    return json.loads((run_dir(recipe) / "05_eval_edge" / f"{label}.heldout.json").read_text())


def training(recipe: str) -> dict:
    facts = manifest(recipe, "03_train")["facts"]
    log = json.loads((run_dir(recipe) / "03_train" / "train_log.json").read_text())
    kd = [row for row in log if "kl" in row]
    return {"examples": facts["examples"], "steps": facts["steps"], "train_seconds": facts["train_seconds"],
            "first_loss": facts["first_loss"], "last_loss": facts["last_loss"],
            **({"first_kl": kd[0]["kl"], "last_kl": kd[-1]["kl"], "first_ce": kd[0]["ce"], "last_ce": kd[-1]["ce"]}
               if kd else {})}


def main() -> int:
    for recipe in (SFT, KD):
        manifest(recipe, "05_eval_edge")  # exits naming the command when a run is missing
    prompts = {r: (run_dir(r) / "05_eval_edge" / "prompts.jsonl").read_text() for r in (SFT, KD)}
    if prompts[SFT] != prompts[KD]:
        sys.exit("the two runs judged different held-out prompts (05_eval_edge/prompts.jsonl differ): run both with "
                 "the same eval_dataset_path and eval_rows")
    rows = [("base (untrained)", judged(SFT, "base"))]
    rows += [(f"{who} student {q}", judged(recipe, f"distilled-{q}")) for q in FILES
             for who, recipe in (("SFT", SFT), ("KD", KD))]
    # the ablation both recipes judge (eval_ablation_file): Q8_0 without the repeat penalty, where loops show
    rows += [(f"{who} student {ABLATION}, no repeat penalty", judged(recipe, f"distilled-{ABLATION}-no-repeat-penalty"))
             for who, recipe in (("SFT", SFT), ("KD", KD))
             if (run_dir(recipe) / "05_eval_edge" / f"distilled-{ABLATION}-no-repeat-penalty.heldout.json").is_file()]
    train = {"SFT": training(SFT), "KD": training(KD)}
    lines = [f"Training: SFT {train['SFT']['examples']} rows / {train['SFT']['steps']} steps in "
             f"{train['SFT']['train_seconds']:.0f} s; KD {train['KD']['examples']} rows / {train['KD']['steps']} steps "
             f"in {train['KD']['train_seconds']:.0f} s (KL {train['KD'].get('first_kl', float('nan')):.3f} -> "
             f"{train['KD'].get('last_kl', float('nan')):.3f}, CE {train['KD'].get('first_ce', float('nan')):.3f} -> "
             f"{train['KD'].get('last_ce', float('nan')):.3f}).", "",
             f"Judged on the same {rows[0][1]['problems']} held-out GSM8K prompts × k = {rows[0][1]['k']} (llama.cpp, "
             "the recipes' sampling, math-verify):",
             "", "| file | </think> closed | pass@1 [95 % CI] | think tokens p50 | hit max tokens | loops |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {100 * r['closure_rate']:.0f} % | {percent_interval(r['pass@1'])} | "
              f"{r['think_tokens']['p50'] or 0:.0f} | {100 * r['truncation_rate']:.0f} % | "
              f"{100 * r['loop_rate']:.0f} % |"
              for name, r in rows]
    table = "\n".join(lines)
    out = runs_root() / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "kd_vs_sft.md", table + "\n")
    atomic_write_text(out / "kd_vs_sft.json", json.dumps({"training": train, "judged": dict(rows)}, indent=1))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
