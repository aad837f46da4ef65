"""Resume 03 after a kill: find the last *complete* checkpoint of the same recipe and data, or refuse.

Usage: ``fingerprint = training_fingerprint(recipe, dataset, backend)``;
``start, notes = resume_point(checkpoints_dir, fingerprint, restart=False)``;
``trainer.add_callback(CheckpointMarker(fingerprint))``; ``trainer.train(resume_from_checkpoint=start)``

transformers' `Trainer` writes ``checkpoint-N/`` file by file (adapter, optimizer, scheduler, RNG states, trainer
state) straight under its final name, so a kill while saving leaves a folder that looks like a checkpoint. Here a
checkpoint counts only once `CheckpointMarker` has written ``thinkdistill_checkpoint.json`` into it — after the
Trainer's last file — atomically; the marker carries the fingerprint of what was trained (the recipe's keys that can
change the adapter, the backend, the masked examples), so a checkpoint of other data or settings is never
continued silently. The Trainer itself restores the weights, optimizer, scheduler, RNG states and the position in
the data (it skips the batches already trained), which makes a resumed CPU run end with the same adapter.
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

MARKER = "thinkdistill_checkpoint.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# recipe keys that cannot change the trained adapter: what is judged, exported, logged or planned, and where
_NOT_TRAINING = frozenset({"description", "hardware", "vram_budget_gib", "allow_over_budget", "logging_steps",
                           "save_steps", "quant_types", "dry_run_dataset_path", "eval_dataset_path"})


class ResumeRefused(ParamsError):
    """The run folder holds checkpoints of another recipe or other data; the message says how to go on."""


def recipe_fingerprint(recipe: Recipe) -> str:
    keys = {k: v for k, v in dataclasses.asdict(recipe).items()
            if k not in _NOT_TRAINING and not k.startswith("eval_")}
    return _sha(json.dumps(keys, sort_keys=True, default=str).encode())


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


def training_fingerprint(recipe: Recipe, dataset, backend_facts: dict) -> dict:
    """What a checkpoint must have been trained from to be continued."""
    backend = {k: v for k, v in backend_facts.items() if k != "stand_ins"}
    return {"recipe": recipe.name, "recipe_sha": recipe_fingerprint(recipe), "data_sha": data_fingerprint(dataset),
            "backend_sha": _sha(json.dumps(backend, sort_keys=True).encode())}


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every ``checkpoint-N`` folder, by step."""
    found = [(int(m.group(1)), p) for p in Path(folder).glob("checkpoint-*")
             if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return sorted(found)


def read_marker(checkpoint: Path) -> dict | None:
    path = checkpoint / MARKER
    return json.loads(path.read_text()) if path.is_file() else None


def resume_point(folder: Path, fingerprint: dict, restart: bool = False,
                 may_delete: bool = True) -> tuple[Path | None, list[str]]:
    """(the checkpoint to continue from or None, what was found and done — for the stage's output and manifest).

    `restart`: delete every checkpoint and start at step 0. Otherwise incomplete checkpoints (no marker: killed
    while saving) are deleted and named; the newest complete one is continued if its fingerprint matches, and a
    mismatch raises `ResumeRefused` naming what differs and how to go on. Of data-parallel processes only the
    main one deletes (`may_delete`); the others pick the same checkpoint."""
    folder = Path(folder)
    found = checkpoints(folder)
    if restart:
        if found and may_delete:
            shutil.rmtree(folder)
        return None, [f"restart: deleted {len(found)} checkpoint(s) in {folder}"] if found else []
    notes, complete = [], []
    for step, path in found:
        if read_marker(path) is None:
            if may_delete:
                shutil.rmtree(path)
            notes.append(f"{path.name}: incomplete (killed while saving), deleted")
        else:
            complete.append((step, path))
    if not complete:
        return None, notes
    step, path = complete[-1]
    marker = read_marker(path)
    differs = [k for k in ("recipe", "recipe_sha", "data_sha", "backend_sha") if marker.get(k) != fingerprint[k]]
    if differs:
        what = {"recipe": "the recipe", "recipe_sha": "the recipe's training keys",
                "data_sha": "the masked examples (02's output)", "backend_sha": "the training backend"}
        raise ResumeRefused(
            f"{path} was trained with other settings ({', '.join(what[k] for k in differs)} differ), so 03 will not "
            f"continue it. Start over with `python -m lib run {fingerprint['recipe']} --stages 03 --restart` "
            f"(notebook: -p restart True; deletes {folder}), or keep it and use another --run-dir.")
    return path, notes + [f"resuming from {path.name} (step {step})"]


def write_marker(checkpoint: Path, fingerprint: dict, step: int) -> None:
    atomic_write_text(Path(checkpoint) / MARKER, json.dumps({**fingerprint, "step": step}, indent=1))


def checkpoint_marker_callback(fingerprint: dict):
    """A `TrainerCallback` that marks each checkpoint complete once the Trainer has written all of it (``on_save``
    runs after the Trainer's last file). Only the main process writes (DDP: every rank saves the same state)."""
    from transformers import TrainerCallback

    class CheckpointMarker(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                write_marker(Path(args.output_dir) / f"checkpoint-{state.global_step}", fingerprint,
                             state.global_step)
            return control

    return CheckpointMarker()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]
