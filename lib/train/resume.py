"""Resume 03 after a kill: find the last *complete* checkpoint of the same recipe and data, or refuse.

Usage: ``fingerprint = training_fingerprint(recipe, dataset, backend.as_dict(), processes)``;
``start, notes = resume_point(checkpoints_dir, fingerprint, restart=False)``;
``trainer.add_callback(checkpoint_marker_callback(fingerprint))``; ``trainer.train(resume_from_checkpoint=start)``;
after the adapter is saved, ``mark_finished(checkpoints_dir, fingerprint)``

transformers' `Trainer` writes ``checkpoint-N/`` file by file (adapter, optimizer, scheduler, RNG states, trainer
state) straight under its final name, so a kill while saving leaves a folder that looks like a checkpoint. Here a
checkpoint counts only once `CheckpointMarker` has written ``thinkdistill_checkpoint.json`` into it — after the
Trainer's last file — atomically; the marker carries the fingerprint of what was trained (the recipe's keys that can
change the adapter, the backend, the masked examples), so a checkpoint of other data or settings is never
continued silently. The Trainer itself restores the weights, optimizer, scheduler, RNG states and the position in
the data (it skips the batches already trained), which makes a resumed CPU run end with the same adapter. A run
that finished (``thinkdistill_finished.json``) is not continued: running 03 again trains anew.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import Path

from lib.paths import atomic_write_text
from lib.recipe import ParamsError, Recipe
from lib.run_config import fingerprint

MARKER = "thinkdistill_checkpoint.json"
FINISHED = "thinkdistill_finished.json"  # in the checkpoints folder once the run's adapter is saved
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# recipe keys that cannot change the trained adapter beyond what the data fingerprint already holds: what is judged,
# exported, logged or planned, and the data stage's keys (01/02 write the examples; their hash is compared)
_NOT_TRAINING = frozenset({
    "description", "hardware", "grpo", "vram_budget_gib", "allow_over_budget", "logging_steps", "save_steps",
    "holdout_eval_steps", "quant_types", "dataset_format", "dataset_fields", "dataset_path", "dataset_split",
    "dataset_config", "dry_run_dataset_path", "train_rows", "system_prompt", "overlong_policy", "fit_percentile",
    "verify_answers", "near_duplicate_threshold", "decontaminate_against", "decontamination_ngram",
    "decontamination_min_overlap", "max_reject_fraction", "teacher_generation", "assistant_turns",
    "tokenizer_fixture", "chat_format", "plain_format", "chat_template_kwargs"})


class ResumeRefused(ParamsError):
    """The run folder holds checkpoints of another recipe or other data; the message says how to go on."""


def training_keys(recipe: Recipe) -> dict:
    """The recipe's keys that can change the adapter trained on given examples (JSON-ready)."""
    return json.loads(json.dumps({k: v for k, v in dataclasses.asdict(recipe).items()
                                  if k not in _NOT_TRAINING and not k.startswith("eval_")}, default=str))


def data_fingerprint(dataset) -> str:
    """The masked examples' token ids and labels, in order (a `datasets.Dataset` with those columns)."""
    import numpy as np
    import pyarrow.compute as pc

    digest = hashlib.sha256()
    for batch in dataset.select_columns(["input_ids", "labels"]).with_format("arrow").iter(batch_size=4096):
        for column in ("input_ids", "labels"):
            values = batch.column(column).combine_chunks()
            digest.update(np.asarray(pc.list_value_length(values), dtype=np.int64).tobytes())
            digest.update(np.asarray(values.flatten(), dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def training_fingerprint(recipe: Recipe, dataset, backend_facts: dict, processes: int = 1,
                         teacher: dict | None = None) -> dict:
    """What a checkpoint must have been trained from to be continued: the recipe's training keys (kept whole, so a
    refusal can name what changed), the backend, the examples, the data-parallel processes (the Trainer's
    position in the data and its per-rank RNG states hold only for the same number) and, when distilling, the
    teacher's files (`teacher_identity`: a teacher written anew, e.g. the demo run again, is another teacher)."""
    backend = {k: v for k, v in backend_facts.items() if k != "stand_ins"}
    return {"recipe": recipe.name, "recipe_keys": training_keys(recipe), "data_sha": data_fingerprint(dataset),
            "backend": backend, "processes": processes, **({"teacher": teacher} if teacher else {})}


def teacher_identity(folder: str) -> dict:
    """The teacher's folder and the (size, modification time) of each weight file in it."""
    weights = sorted(p for p in Path(folder).iterdir() if p.suffix in (".safetensors", ".bin"))
    return {"path": str(folder), "weights": {p.name: fingerprint(p) for p in weights}}


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every ``checkpoint-N`` folder, by step."""
    found = [(int(m.group(1)), p) for p in Path(folder).glob("checkpoint-*")
             if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return sorted(found)


def read_marker(checkpoint: Path) -> dict | None:
    """The fingerprint a complete checkpoint was marked with; None for an incomplete one."""
    path = checkpoint / MARKER
    return json.loads(path.read_text()) if path.is_file() else None


def resume_point(folder: Path, fingerprint: dict, restart: bool = False,
                 may_delete: bool = True, stage: str = "03") -> tuple[Path | None, list[str]]:
    """(the checkpoint to continue from or None, what was found and done — for the stage's output and manifest).

    `restart`, or a run that finished (its adapter saved): delete every checkpoint and start at step 0. Otherwise
    incomplete checkpoints (no marker: killed while saving, or written before markers existed) are deleted and
    named; the newest complete one is continued if its fingerprint matches, and a mismatch raises `ResumeRefused`
    naming what differs and how to go on. Of data-parallel processes only the main one deletes (`may_delete`); the
    others pick the same checkpoint."""
    folder = Path(folder)
    found = checkpoints(folder)
    finished = (folder / FINISHED).is_file()
    if restart or finished:
        if (found or finished) and may_delete:
            _delete(folder)
        why = "restart" if restart else "the last run finished"
        return None, [f"{why}: deleted {len(found)} checkpoint(s) in {folder}; training from step 0"] \
            if found and may_delete else []
    notes, complete = [], []
    for step, path in found:
        if read_marker(path) is None:
            if may_delete:
                _delete(path)
                notes.append(f"{path.name}: no completion marker (killed while saving, or written by an older "
                             "version), deleted")
        else:
            complete.append((step, path))
    if not complete:
        return None, notes
    step, path = complete[-1]
    differs = fingerprint_differences(read_marker(path), fingerprint)
    if differs:
        raise ResumeRefused(
            f"{path} was trained with other settings ({'; '.join(differs)}), so {stage} will not continue it. Run "
            f"{stage} again with restart to start over and delete {folder} (the same command with --restart, or the "
            "notebook with -p restart True), or put the recipe back as it was to continue.")
    return path, notes + [f"resuming from {path.name} (step {step})"]


def fingerprint_differences(old: dict, new: dict) -> list[str]:
    """What differs between a checkpoint's fingerprint and this run's, in words (`key: old -> new`)."""
    found = []
    if old.get("recipe") != new["recipe"]:
        found.append(f"recipe: {old.get('recipe')} -> {new['recipe']}")
    keys_old, keys_new = old.get("recipe_keys") or {}, new["recipe_keys"]
    found += [f"{k}: {keys_old.get(k)!r} -> {keys_new.get(k)!r}" for k in sorted(set(keys_old) | set(keys_new))
              if keys_old.get(k) != keys_new.get(k)]
    if old.get("data_sha") != new["data_sha"]:
        found.append("the masked examples (02's output) changed")
    if old.get("backend") != new["backend"]:
        found.append(f"backend: {old.get('backend')} -> {new['backend']}")
    if old.get("processes") != new["processes"]:
        found.append(f"data-parallel processes: {old.get('processes')} -> {new['processes']}")
    if old.get("teacher") != new.get("teacher"):
        found.append(f"the teacher's files ({(new.get('teacher') or {}).get('path', 'none now')}) changed")
    return found


def mark_finished(folder: Path, fingerprint: dict) -> None:
    """The run's adapter is saved: 03 run again trains anew rather than continuing a finished run."""
    atomic_write_text(Path(folder) / FINISHED, json.dumps(fingerprint, indent=1))


def _delete(path: Path) -> None:
    """Rename away, then delete: a kill while deleting never leaves a marked checkpoint missing some of its files."""
    doomed = path.with_name(f".{path.name}.deleting")
    shutil.rmtree(doomed, ignore_errors=True)
    path.rename(doomed)
    shutil.rmtree(doomed)


def write_marker(checkpoint: Path, fingerprint: dict, step: int) -> None:
    """Mark `checkpoint` complete (atomically): what it was trained from, and its step."""
    atomic_write_text(Path(checkpoint) / MARKER, json.dumps({**fingerprint, "step": step}, indent=1))


def checkpoint_marker_callback(fingerprint: dict):
    """A `TrainerCallback` that marks each checkpoint complete once the Trainer has written all of it (``on_save``
    runs after the Trainer's last file). Data-parallel: every rank writes its own RNG state, so all wait for all
    (a barrier) before the main process alone writes the marker."""
    from transformers import TrainerCallback

    class CheckpointMarker(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()
            if state.is_world_process_zero:
                write_marker(Path(args.output_dir) / f"checkpoint-{state.global_step}", fingerprint,
                             state.global_step)
            return control

    return CheckpointMarker()
