"""Filters between reading traces and training on them: answer verification, duplicates, decontamination.

Usage::

    reply_matches_reference("72", "… so she has $\\boxed{72}$ left.")          # True (math-verify)
    seen = DuplicateFilter(near_threshold=0.9); seen.check(row)      # None, "exact duplicate" or "near duplicate"
    guard = Decontaminator.from_eval_sets(["gsm8k_test", "math500", "aime24"], ngram=8, min_overlap=0.2)
    guard.check(row)                                       # None or ("math500:42", "12 of its 18 8-grams (67 %)…")

Each filter looks at one canonical row at a time and keeps only small per-row state (hashes, sketches), so a
source of any size streams through in bounded memory.
"""
from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass

import numpy as np

from lib.data.schemas import last_boxed
from lib.eval_sets import eval_problems

# --- answer verification ------------------------------------------------------------------------------------

_ALREADY_LATEX = ("$", "\\boxed", "\\(", "\\[")
_WORD_ANSWER = re.compile(r"^[^\W\d_]+(?:[ '\-][^\W\d_]+)*$")  # words in any script: "no", "José", "New York"
_TEXT_WRAP = re.compile(r"^\\text\{(.*)\}$")
_NUMBER_WITH_UNIT = re.compile(r"^(-?\d[\d,]*(?:\.\d+)?)\s+[^\W\d_]+(?:\s+[^\W\d_]+)*$")  # "18 dollars"
_ANSWER_IS = re.compile(r"answer\s+is\b:?", re.IGNORECASE)
_DASHES = str.maketrans({"\u2212": "-"})  # the Unicode minus sign


def reply_matches_reference(reference: str, answer_text: str) -> bool:
    """Whether `answer_text` states the `reference` answer, judged by math-verify (sympy equivalence).

    The evaluation judges model answers with it too (`lib.evaluate.judging`): one rule for "right".

    The reference is a bare answer ("72", "3\\sqrt{13}", "(3, \\frac{\\pi}{2})"); wrapped in `$…$` it is read as
    LaTeX, which bare strings are not (math-verify reads a bare "3\\sqrt{13}" as 3). The answer text is a model's
    reply; math-verify extracts its last boxed / stated answer. A number with a unit ("18 dollars") is compared as
    the number. A reference in words ("no", "Evelyn", "\\text{B}") is compared with the reply's *final* answer —
    its last `\\boxed{}`, else what follows its last "answer is", else the whole reply — as a whole word, ignoring
    case (math-verify would compare letters as algebra symbols). The Unicode minus counts as "-".
    math-verify guards each call with signal.alarm, which only the main thread may use: in other threads the
    timeout is off (callers bound time themselves).
    """
    reference, answer_text = reference.translate(_DASHES).strip(), answer_text.translate(_DASHES)
    if not reference or not answer_text.strip():
        return False
    wrapped = _TEXT_WRAP.match(reference)
    words_only = wrapped.group(1).strip() if wrapped else reference
    if _WORD_ANSWER.match(words_only):
        pattern = rf"(?<!\w){re.escape(words_only)}(?!\w)"
        return re.search(pattern, final_answer_text(answer_text), re.IGNORECASE) is not None
    with_unit = _NUMBER_WITH_UNIT.match(reference)
    if with_unit:
        reference = with_unit.group(1)
    from math_verify import parse, verify  # sympy underneath: seconds to import, so only where answers are judged

    gold_text = reference if reference.lstrip().startswith(_ALREADY_LATEX) else f"${reference}$"
    timeouts = parse_timeouts()
    gold, predicted = parse(gold_text, **timeouts), parse(answer_text, **timeouts)
    if not gold or not predicted:
        return False
    return verify(gold, predicted, **({} if not timeouts else {"timeout_seconds": None}))


def parse_timeouts() -> dict:
    """math-verify's `parse` arguments for this thread: its signal.alarm timeout only works in the main thread."""
    return {} if threading.current_thread() is threading.main_thread() else {"parsing_timeout": None}


def final_answer_text(reply: str) -> str:
    """The part of a reply that states its final answer: the last `\\boxed{}`, else the text after the last
    "answer is", else the whole reply."""
    boxed = last_boxed(reply)
    if boxed is not None:
        return boxed
    stated = list(_ANSWER_IS.finditer(reply))
    return reply[stated[-1].end():] if stated else reply


# --- text normalisation -------------------------------------------------------------------------------------

_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalized(text: str) -> str:
    """Lower-case, whitespace collapsed: two texts equal under this are the same text to a reader."""
    return " ".join(text.lower().split())


def words(text: str) -> list[str]:
    """Lower-case alphanumeric words: punctuation, LaTeX markup and spacing do not hide an overlap."""
    return _NON_WORD.sub(" ", text.lower()).split()


def row_text(row: dict) -> str:
    """Every prompt and reply of a canonical row in order: what makes two examples the same example."""
    parts = []
    for turn in row["messages"]:
        parts += [turn["think"], turn["answer"]] if turn["role"] == "assistant" else [turn["content"]]
    return "\n".join(parts)


def user_prompts(row: dict) -> str:
    """All user turns of a canonical row: what an evaluation set could have leaked into."""
    return "\n".join(turn["content"] for turn in row["messages"] if turn["role"] == "user")


# --- duplicates ---------------------------------------------------------------------------------------------

_SHINGLE_CHARS = 9  # character shingles: robust to re-spacing and small edits, vectorisable (no per-word calls)
_BINS, _BANDS = 64, 8  # one-permutation MinHash: 64 bins; LSH with 8 bands of 8 bins
_EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)


def shingle_hashes(text: str) -> np.ndarray:
    """Stable 64-bit hashes of every `_SHINGLE_CHARS`-character window of the normalised text (no Python hash(),
    whose per-process salt would change which rows count as duplicates from one run to the next)."""
    return _shingle_hashes_of(normalized(text))


def _shingle_hashes_of(normal_text: str) -> np.ndarray:
    data = np.frombuffer(normal_text.encode("utf-8"), dtype=np.uint8).astype(np.uint64)
    if data.size < _SHINGLE_CHARS:
        data = np.concatenate([data, np.zeros(_SHINGLE_CHARS - data.size, dtype=np.uint64)])
    n = data.size - _SHINGLE_CHARS + 1
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for offset in range(_SHINGLE_CHARS):  # polynomial hash, wrapping mod 2**64
            h = h * np.uint64(1099511628211) + data[offset:offset + n]
        # a final mix so the top bits (which pick the bin) depend on every character
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
    return np.unique(h)


def minhash_sketch(text: str) -> np.ndarray:
    """One-permutation MinHash: the smallest shingle hash in each of `_BINS` equal slices of the hash space.

    Empty slices hold `_EMPTY`. One sort per text, so long reasoning traces cost O(n log n), not O(n x perms).
    """
    return _sketch_of(normalized(text))


def _sketch_of(normal_text: str) -> np.ndarray:
    hashes = _shingle_hashes_of(normal_text)  # sorted by np.unique
    width = np.uint64(2 ** 64 // _BINS)
    starts = np.arange(_BINS, dtype=np.uint64) * width
    first = np.searchsorted(hashes, starts)
    sketch = np.full(_BINS, _EMPTY, dtype=np.uint64)
    inside = first < hashes.size
    candidates = hashes[np.minimum(first, hashes.size - 1)]
    in_bin = inside & ((candidates - starts) < width)
    sketch[in_bin] = candidates[in_bin]
    return sketch


def sketch_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard estimate of two sketches: equal non-empty bins over bins non-empty in either."""
    empty = np.iinfo(a.dtype).max  # _EMPTY, or its top half in stored 32-bit sketches
    used = (a != empty) | (b != empty)
    if not used.any():
        return 1.0
    return float(((a == b) & used).sum() / used.sum())


# Not datasketch: benchmarks/dedup_vs_datasketch.py (datasketch 2.0.0; same text, shingles, 64 permutations,
# threshold 0.9) measured it ~3.5x slower here (a Python SHA-1 call per shingle against one vectorised numpy
# hash of all shingles), and with other hash functions it keeps different rows wherever near duplicates exist
# (~200 of ~470 flagged rows differ even with our 8x8 bands), so the kept ids could not stay identical.
@dataclass
class DuplicateFilter:
    """Remembers the rows it kept; `check` says whether a new row repeats one of them.

    Exact: the same prompts, reasoning and answer up to case and spacing. Near: estimated Jaccard similarity of
    9-character shingles >= `near_threshold` (0 turns it off). Two traces for the same problem with different
    reasoning are *not* duplicates (OpenR1 keeps several correct generations per problem on purpose).
    """

    near_threshold: float = 0.9

    def __post_init__(self):
        self._exact: dict[bytes, str] = {}
        self._bands: list[dict[int, int]] = [{} for _ in range(_BANDS)]
        self._sketches = _SketchStore()
        self._ids: list[str] = []

    def check(self, row: dict) -> tuple[str, str] | None:
        """None if the row is new (it is then remembered), else (reason, id of the earlier row)."""
        text = normalized(row_text(row))  # once: the digest and the sketch both read the normalised text
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        if digest in self._exact:
            return "exact duplicate", self._exact[digest]
        if self.near_threshold > 0:
            sketch = _sketch_of(text)
            keys = _band_keys(sketch)
            match = self._near_match(sketch, keys)
            if match is not None:
                return "near duplicate", self._ids[match]
            index = self._sketches.append(sketch)
            self._ids.append(str(row["id"]))
            for band, key in enumerate(keys):
                self._bands[band].setdefault(key, index)
        self._exact[digest] = str(row["id"])
        return None

    def _near_match(self, sketch: np.ndarray, keys: list[int]) -> int | None:
        candidates = {self._bands[band].get(key) for band, key in enumerate(keys)} - {None}
        compact = top_bits(sketch)
        for index in sorted(candidates):
            if sketch_similarity(compact, self._sketches.get(index)) >= self.near_threshold:
                return index
        return None


class _SketchStore:
    """Sketches of the kept rows in fixed blocks: memory grows by one block at a time and nothing is ever copied
    (a doubling array would briefly hold 1.5x its size). Stored as the top 32 bits of each minimum: two different
    shingles agree there with probability 2**-32, which does not move a Jaccard estimate."""

    BLOCK = 4096

    def __init__(self):
        self._blocks: list[np.ndarray] = []
        self._count = 0

    def append(self, sketch: np.ndarray) -> int:
        if self._count % self.BLOCK == 0:
            self._blocks.append(np.empty((self.BLOCK, _BINS), dtype=np.uint32))
        self._blocks[-1][self._count % self.BLOCK] = top_bits(sketch)
        self._count += 1
        return self._count - 1

    def get(self, index: int) -> np.ndarray:
        return self._blocks[index // self.BLOCK][index % self.BLOCK]


def top_bits(sketch: np.ndarray) -> np.ndarray:
    """The 32-bit form of a sketch (empty bins stay all-ones, i.e. empty)."""
    return (sketch >> np.uint64(32)).astype(np.uint32)


_BAND_MIX = np.array([0x9E3779B97F4A7C15 * (2 * i + 1) % 2 ** 64 for i in range(_BINS // _BANDS)], dtype=np.uint64)


def _band_keys(sketch: np.ndarray) -> list[int]:
    """One 64-bit key per band of the sketch (a Python int is a third of the memory of the band's bytes)."""
    with np.errstate(over="ignore"):
        return (sketch.reshape(_BANDS, -1) * _BAND_MIX).sum(axis=1).tolist()


# --- decontamination ----------------------------------------------------------------------------------------

def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    """Word n-grams; a text shorter than n words is its own single n-gram (so a short problem still matches)."""
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


_SHORTEST_WINDOW = 4  # a short problem of 4+ words is looked for inside longer prompts; shorter ones only whole


class Decontaminator:
    """Flags a training row whose user prompt covers enough of an evaluation problem's word n-grams.

    n = 8 by default, as open-r1's decontamination of its reasoning sets does. open-r1 flags a prompt sharing any
    one 8-gram; on word problems that removes stock phrases ("how much money will she have left over", "what is
    the sum of the ages of": 80 of the 94 GSM8K-train rows it flags against GSM8K test share one or two 8-grams,
    under 10 % of the test problem). So a row is contaminated when the 8-grams it shares with one evaluation
    problem are at least `min_overlap` of that problem's 8-grams (0.2 by default: a test problem copied with other
    names and numbers shares 24-67 %; `min_overlap: 0` is open-r1's any-8-gram rule). A problem shorter than n
    words ("Compute $\\dbinom{16}{5}$.") is one gram of its own length, searched for inside longer prompts when it
    has at least 4 words, matched whole otherwise: found, it is covered entirely.
    """

    def __init__(self, problems: dict[str, list[str]], ngram: int = 8, min_overlap: float = 0.2):
        if ngram < 1:
            raise ValueError(f"decontamination n-gram size must be >= 1, got {ngram}")
        self.ngram, self.min_overlap = ngram, min_overlap
        self.sizes = {name: len(texts) for name, texts in problems.items()}
        self._names: list[str] = []  # owner index -> "<eval set>:<problem number>"
        self._grams_per_owner: list[int] = []
        self._owners: dict[tuple[str, ...], tuple[int, ...]] = {}  # n-gram -> every problem holding it
        self._short: dict[tuple[str, ...], int] = {}  # whole problems shorter than n words
        for name, texts in problems.items():
            for number, text in enumerate(texts, start=1):
                tokens, owner = words(text), len(self._names)
                self._names.append(f"{name}:{number}")
                if len(tokens) < ngram:
                    self._short.setdefault(tuple(tokens), owner)
                    self._grams_per_owner.append(1)
                    continue
                grams = ngrams(tokens, ngram)
                self._grams_per_owner.append(len(grams))
                for gram in grams:
                    self._owners[gram] = self._owners.get(gram, ()) + (owner,)
        self._short_lengths = sorted({len(gram) for gram in self._short if len(gram) >= _SHORTEST_WINDOW})

    @classmethod
    def from_eval_sets(cls, names: list[str], ngram: int = 8, min_overlap: float = 0.2) -> "Decontaminator":
        """Build from the shipped evaluation sets (`lib.eval_sets`)."""
        return cls({name: eval_problems(name) for name in names}, ngram, min_overlap)

    def check(self, row: dict) -> tuple[str, str] | None:
        """('<eval set>:<problem number>', what is shared) for the evaluation problem the row's user prompts cover
        most, if that reaches `min_overlap`, else None."""
        tokens = words(user_prompts(row))
        if tuple(tokens) in self._short:
            return self._names[self._short[tuple(tokens)]], f"the whole problem: {' '.join(tokens)!r}"
        for length in self._short_lengths:  # a short problem inside a longer prompt
            for i in range(len(tokens) - length + 1):
                owner = self._short.get(tuple(tokens[i:i + length]))
                if owner is not None:
                    return self._names[owner], f"the whole problem: {' '.join(tokens[i:i + length])!r}"
        shared: dict[int, set] = {}
        for i in range(len(tokens) - self.ngram + 1):
            gram = tuple(tokens[i:i + self.ngram])
            for owner in self._owners.get(gram, ()):
                shared.setdefault(owner, set()).add(gram)
        if not shared:
            return None
        owner, grams = max(shared.items(), key=lambda item: len(item[1]) / self._grams_per_owner[item[0]])
        coverage = len(grams) / self._grams_per_owner[owner]
        if coverage < self.min_overlap:
            return None
        return self._names[owner], (f"{len(grams)} of its {self._grams_per_owner[owner]} {self.ngram}-grams "
                                    f"({coverage:.0%}), e.g. {' '.join(min(grams))!r}")
