"""Near-duplicate filtering: `lib.data.filters.DuplicateFilter` against a `datasketch` MinHash LSH doing the same job.

Usage: ``.venv/bin/python benchmarks/dedup_vs_datasketch.py [--synthetic 20000] [--repeats 3] [--out FILE.json]``

Needs datasketch, which is *not* a project dependency: ``.venv/bin/pip install -c constraints.txt datasketch==2.0.0``
(measured with datasketch 2.0.0, numpy 2.4.6, scipy 1.17.1). Without it the script exits with status 2.

Both sides see the same canonical rows in the same order and do the whole per-row job, in one process:

- ours: ``DuplicateFilter(0.9).check(row)`` (one-permutation MinHash, 64 bins, LSH 8 bands x 8 rows, candidates
  verified by the sketches' estimated Jaccard >= 0.9; exact duplicates first by a blake2b digest).
- datasketch: the same text (``normalized(row_text(row))``), the same blake2b exact-duplicate key first, then the
  same shingle *set* as ours (every 9-byte window of the normalised text's UTF-8, zero-padded when shorter: exactly
  the windows `_shingle_hashes_of` hashes), hashed by datasketch's default (SHA-1, 32 bits) into
  ``MinHash(num_perm=64)`` via ``update_batch`` (each sketch a ``copy()`` of one template, as ``MinHash.generator``
  does, so the 64 permutations are drawn once), then ``MinHashLSH(threshold=0.9, num_perm=64)`` query-then-insert,
  candidates verified by ``MinHash.jaccard >= 0.9``, the earliest kept row that passes being the match (as ours).
  datasketch picks its own bands for (0.9, 64): 3 bands x 21 rows, which reaches only 63 of the 64 values. So it is
  run twice: with its own choice, and with ``params=(8, 8)``, our banding.

Rows: the 7,473 GSM8K train rows shipped in `data/gsm8k/train.jsonl.gz` (no near duplicates at 0.9, so agreement
there says little); the same followed by ``--near-copies`` (1,000) copies of random rows with 1-6 letters of their
reasoning substituted, exact shingle Jaccard to the source spread around 0.9, each side also scored against that exact
Jaccard; and (``--synthetic N``, 0 to skip) the
first N rows of `benchmarks/data_ingest.py`'s synthetic set (GSM8K rows with names and numbers varied, ~2 % faults:
the unreadable ones are rejected by the reader, the planted exact copies stay). Each side runs ``--repeats`` times,
the sides interleaved; the best wall time counts, and every repeat must flag the same rows. For the rows only one
side flags, the pair it matched is scored by the *exact* Jaccard of the two shingle sets, so a disagreement can be
told apart as one side's estimation error. One JSON object is printed and written to ``--out``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import string
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `lib` when run as a plain script
sys.path.insert(0, str(ROOT / "benchmarks"))  # `data_ingest`, for its synthetic rows

try:
    import datasketch
    from datasketch import MinHash, MinHashLSH
except ImportError:
    print("datasketch is not installed (it is not a project dependency); for this benchmark only:\n"
          "  .venv/bin/pip install -c constraints.txt datasketch==2.0.0", file=sys.stderr)
    sys.exit(2)

import numpy as np  # noqa: E402

from lib.data.filters import DuplicateFilter, normalized, row_text  # noqa: E402
from lib.data.rows import read_reasoning_rows  # noqa: E402

THRESHOLD, NUM_PERM, SHINGLE_BYTES = 0.9, 64, 9  # lib.data.filters: near_threshold default, _BINS, _SHINGLE_CHARS


def shingles(normal_text: str) -> set[bytes]:
    """The windows `lib.data.filters._shingle_hashes_of` hashes: every 9 bytes of the UTF-8, zero-padded if shorter."""
    data = normal_text.encode("utf-8")
    if len(data) < SHINGLE_BYTES:
        data += b"\0" * (SHINGLE_BYTES - len(data))
    return {data[i:i + SHINGLE_BYTES] for i in range(len(data) - SHINGLE_BYTES + 1)}


class DatasketchDuplicateFilter:
    """`DuplicateFilter`'s job with datasketch's MinHash and MinHashLSH: same `check` contract."""

    def __init__(self, near_threshold: float = THRESHOLD, params: tuple[int, int] | None = None):
        self.near_threshold = near_threshold
        self._exact: dict[bytes, str] = {}
        self._template = MinHash(num_perm=NUM_PERM)  # permutations drawn once; each row gets a copy()
        self._lsh = MinHashLSH(threshold=near_threshold, num_perm=NUM_PERM, params=params)
        self._sketches: list[MinHash] = []
        self._ids: list[str] = []

    def check(self, row: dict) -> tuple[str, str] | None:
        text = normalized(row_text(row))
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        if digest in self._exact:
            return "exact duplicate", self._exact[digest]
        sketch = self._template.copy()
        sketch.update_batch(shingles(text))
        for index in sorted(self._lsh.query(sketch)):
            if sketch.jaccard(self._sketches[index]) >= self.near_threshold:
                return "near duplicate", self._ids[index]
        index = len(self._sketches)
        self._lsh.insert(index, sketch)
        self._sketches.append(sketch)
        self._ids.append(str(row["id"]))
        self._exact[digest] = str(row["id"])
        return None


def run(make_filter, rows: list[dict]) -> tuple[float, dict[str, tuple[str, str]]]:
    """Wall seconds for one pass over `rows` with a fresh filter, and {flagged row id: (reason, earlier id)}."""
    started = time.perf_counter()
    seen = make_filter()
    flagged = {}
    for row in rows:
        verdict = seen.check(row)
        if verdict is not None:
            flagged[str(row["id"])] = verdict
    return time.perf_counter() - started, flagged


def exact_jaccard(a: dict, b: dict) -> float:
    sa, sb = shingles(normalized(row_text(a))), shingles(normalized(row_text(b)))
    return len(sa & sb) / len(sa | sb)


def compare(name: str, rows: list[dict], repeats: int, planted: dict[str, str] | None = None) -> dict:
    sides = {"ours": lambda: DuplicateFilter(THRESHOLD),
             "datasketch": lambda: DatasketchDuplicateFilter(THRESHOLD),
             "datasketch_8x8": lambda: DatasketchDuplicateFilter(THRESHOLD, params=(8, 8))}
    best: dict[str, float] = {}
    flagged: dict[str, dict] = {}
    for repeat in range(repeats):
        for side, make in sides.items():  # interleaved: a slow spell on the machine hits every side
            seconds, found = run(make, rows)
            if side in flagged and found != flagged[side]:
                raise SystemExit(f"{name}/{side}: repeat {repeat + 1} flagged other rows than repeat 1")
            flagged[side] = found
            best[side] = min(best.get(side, float("inf")), seconds)
            print(f"{name} repeat {repeat + 1} {side}: {seconds:.2f} s", file=sys.stderr, flush=True)
    by_id = {str(row["id"]): row for row in rows}
    report = {"rows": len(rows), "sides": {}}
    for side, found in flagged.items():
        reasons = [reason for reason, _ in found.values()]
        report["sides"][side] = {"seconds": round(best[side], 3), "rows_per_s": round(len(rows) / best[side]),
                                 "exact_duplicates": reasons.count("exact duplicate"),
                                 "near_duplicates": reasons.count("near duplicate"),
                                 "kept": len(rows) - len(found)}
    if planted:  # each planted copy against its source: what the exact Jaccard says each side should have done
        truth = {i: exact_jaccard(by_id[i], by_id[source]) for i, source in planted.items()}
        should = {i for i, score in truth.items() if score >= THRESHOLD}
        report["planted_near_copies"] = {"count": len(planted), "exact_jaccard_at_or_above_threshold": len(should),
                                         "exact_jaccard_quartiles": [round(float(q), 3) for q in
                                                                     np.quantile(list(truth.values()), [0.25, 0.5, 0.75])]}
        for side, found in flagged.items():
            report["sides"][side]["planted"] = {"flagged_and_truly_at_or_above": len(should & set(found)),
                                                "missed_though_at_or_above": len(should - set(found)),
                                                "flagged_though_below": len((set(planted) - should) & set(found))}
    ours = flagged["ours"]
    for side in ("datasketch", "datasketch_8x8"):
        theirs = flagged[side]
        only_ours, only_theirs = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))

        def truth(ids, verdicts):  # exact shingle-set Jaccard of each disputed row and the row it was matched to
            scores = [exact_jaccard(by_id[i], by_id[verdicts[i][1]]) for i in ids]
            return {"count": len(ids), "truly_at_or_above_threshold": sum(s >= THRESHOLD for s in scores),
                    "exact_jaccard_min_median_max": [round(float(np.min(scores)), 3), round(float(np.median(scores)), 3),
                                                     round(float(np.max(scores)), 3)] if scores else None,
                    "examples": [f"{i} ~ {verdicts[i][1]}: {s:.3f}" for i, s in list(zip(ids, scores))[:5]]}

        report["sides"][side]["vs_ours"] = {
            "identical_kept_ids": not only_ours and not only_theirs,
            "flagged_by_both": len(set(ours) & set(theirs)),
            "same_earlier_row_when_both_flag": sum(ours[i][1] == theirs[i][1] for i in set(ours) & set(theirs)),
            "only_ours_flags": truth(only_ours, ours), f"only_{side}_flags": truth(only_theirs, theirs),
            f"ratio_ours_over_{side}_rows_per_s": round(best[side] / best["ours"], 2)}  # > 1: ours is faster
    return report


def with_near_copies(rows: list[dict], n: int, seed: int = 0) -> tuple[list[dict], dict[str, str]]:
    """`rows` followed by `n` copies of random rows with 1-6 random letters of the reasoning substituted (exact
    shingle Jaccard to the source spread around the 0.9 threshold); returns the rows and {copy id: source id}."""
    rng = random.Random(seed)
    copies, planted = [], {}
    for j in range(n):
        source = rows[rng.randrange(len(rows))]
        think = list(source["messages"][1]["think"])
        for _ in range(rng.randint(1, 6)):
            think[rng.randrange(len(think))] = rng.choice(string.ascii_lowercase)
        copy = json.loads(json.dumps(source))
        copy["messages"][1]["think"] = "".join(think)
        copy["id"] = f"{source['id']}-near{j}"
        copies.append(copy)
        planted[copy["id"]] = str(source["id"])
    return rows + copies, planted


def synthetic_rows(n: int) -> list[dict]:
    from data_ingest import synthesise

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.jsonl"
        synthesise(path, n)
        rows, _ = read_reasoning_rows(path, "triplets")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=20_000, help="rows of data_ingest.py's synthetic set; 0: skip")
    parser.add_argument("--near-copies", type=int, default=1000, help="edited GSM8K copies appended; 0: skip")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "runs" / "benchmarks" / "dedup_vs_datasketch.json"))
    args = parser.parse_args()
    gsm8k = read_reasoning_rows(ROOT / "data/gsm8k/train.jsonl.gz", "gsm8k")[0]
    datasets = {"gsm8k_train": (gsm8k, None)}
    if args.near_copies:
        datasets[f"gsm8k_train_plus_{args.near_copies}_near_copies"] = with_near_copies(gsm8k, args.near_copies)
    if args.synthetic:
        datasets[f"synthetic_{args.synthetic}"] = (synthetic_rows(args.synthetic), None)
    probe = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    result = {"datasketch": datasketch.__version__, "numpy": np.__version__,
              "datasketch_default_bands_x_rows": [probe.b, probe.r], "ours_bands_x_rows": [8, 8],
              "threshold": THRESHOLD, "num_perm": NUM_PERM, "repeats": args.repeats,
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
              "datasets": {name: compare(name, rows, args.repeats, planted)
                           for name, (rows, planted) in datasets.items()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
