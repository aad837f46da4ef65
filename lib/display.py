"""Everything the notebooks show: tables, pictures, the coloured mask view and the example browser.

Usage: ``display(facts_table(facts))``; ``display(loss_plot(log_history, path, title))``

Stage modules compute; this module shows. Every result renders the same in JupyterLab, in nbconvert HTML and on
GitHub: Markdown tables and PNG pictures (never a bare JSON display, which only JupyterLab renders). Figures go
through one tail, `_saved`, so every PNG is written the same way.
"""
from __future__ import annotations

import html
from pathlib import Path

from IPython.display import HTML, Image, Markdown

from lib.evaluate.metrics import percent_interval
from lib.masking.templates import IGNORE_INDEX, MaskedExample

_CELL_CHARS = 90  # a table cell longer than this is cut for display (the files hold everything)


# --- tables ---------------------------------------------------------------------------------------------------

def _cell(value) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        text = f"{value:,}"
    elif isinstance(value, dict):
        text = ", ".join(f"{k}: {_cell(v)}" for k, v in value.items()) or "–"
    elif isinstance(value, (list, tuple)):
        text = ", ".join(_cell(v) for v in value) or "–"
    else:
        text = "–" if value is None else str(value)
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= _CELL_CHARS else text[:_CELL_CHARS - 1] + "…"


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows of dicts as a Markdown table (columns: the first row's keys unless given)."""
    if not rows:
        return "_(none)_"
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def facts_table(facts: dict | None, title: str = "", empty: str = "nothing to show") -> Markdown:
    """A dict as a two-column table of what and value (nested dicts on one line); `empty` when there is none."""
    if not facts:
        return note(empty)
    head = f"**{title}**\n\n" if title else ""
    return Markdown(head + markdown_table([{"what": k, "value": v} for k, v in facts.items()]))


def table(rows: list[dict], columns: list[str] | None = None, title: str = "", empty: str = "") -> Markdown:
    """Rows of dicts as a table under an optional bold title; `empty` (italic) when there are no rows."""
    if not rows and empty:
        return note(empty)
    head = f"**{title}**\n\n" if title else ""
    return Markdown(head + markdown_table(rows, columns))


def rejects_table(counts: dict[str, int], samples: dict[str, list[dict]], extra: dict[str, int] | None = None,
                  shown: int = 3) -> Markdown:
    """Each reject reason with its count and its first source lines and details."""
    if not counts and not extra:
        return Markdown("No row was rejected or removed.")
    rows = [{"reason": reason, "rows": n,
             "first lines (detail)": "; ".join(f"{s['line']} ({s['detail']})" if s["detail"] else str(s["line"])
                                               for s in samples.get(reason, [])[:shown])}
            for reason, n in counts.items()]
    rows += [{"reason": reason, "rows": n, "first lines (detail)": ""} for reason, n in (extra or {}).items()]
    return table(rows)


# --- masks ----------------------------------------------------------------------------------------------------

TRAINED_BACKGROUND = "#c8f7c5"  # a trained token in the mask view (the site's browser test looks for it)


def colored_html(example: MaskedExample, tokenizer, max_tokens: int = 400) -> str:
    """HTML of the rendered conversation: trained tokens green, masked grey; special tokens shown literally."""
    spans = []
    for i, (tok, label) in enumerate(zip(example.input_ids, example.labels)):
        if i >= max_tokens:
            spans.append(f"<span style='color:#888'> … {len(example.input_ids) - max_tokens} more tokens</span>")
            break
        piece = html.escape(tokenizer.decode([tok])).replace("\n", "↵<br>")
        style = f"background:{TRAINED_BACKGROUND};color:#000" if label != IGNORE_INDEX else "background:#eee;color:#777"
        spans.append(f"<span style='{style};border-right:1px solid #fff' title='{tok}'>{piece}</span>")
    legend = (f"<div style='font:12px sans-serif;margin-bottom:4px'><span style='background:{TRAINED_BACKGROUND}'>trained</span> "
              "<span style='background:#eee;color:#777'>masked (-100)</span></div>")
    return legend + "<div style='font:12px monospace;line-height:1.6;white-space:normal'>" + "".join(spans) + "</div>"


def mask_view(title: str, example: MaskedExample, tokenizer) -> HTML:
    """One example's coloured view under a heading."""
    return HTML(f"<h4>{html.escape(title)}</h4>" + colored_html(example, tokenizer))


def example_browser(examples: list[MaskedExample], ids: list[str], tokenizer):
    """A slider over every masked example with its coloured view (live in JupyterLab; static notebooks show the
    widget's text only, which is why the notebook also shows fixed examples)."""
    import ipywidgets as widgets

    slider = widgets.IntSlider(value=0, min=0, max=max(0, len(examples) - 1), description="example")
    view = widgets.HTML()

    def show(_change=None):
        example = examples[slider.value]
        view.value = (f"<b>{ids[slider.value]}</b>: {len(example.input_ids)} tokens, {example.n_trained} "
                      f"trained<br>" + colored_html(example, tokenizer))

    slider.observe(show, names="value")
    show()
    return widgets.VBox([slider, view])


def trained_fraction_table(examples: list[MaskedExample], ids: list[str], limit: int = 10) -> Markdown:
    """Per-sample stats: id, tokens, trained tokens, trained fraction, untrained turns (first `limit`)."""
    rows = [{"id": i, "tokens": len(e.input_ids), "trained": e.n_trained,
             "trained fraction": f"{e.n_trained / len(e.input_ids):.1%}", "untrained turns": len(e.untrained_turns)}
            for i, e in list(zip(ids, examples))[:limit]]
    more = len(examples) - limit
    return Markdown(markdown_table(rows) + (f"\n\n… and {more} more (all in the histogram)" if more > 0 else ""))


# --- pictures -------------------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _saved(fig, path: Path) -> Image:
    """The one tail of every figure: tight layout, PNG at 110 dpi, closed, shown as an image."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return Image(filename=str(path))


def length_plot(lengths: list[int], trained_fractions: list[float], recipe_max_length: int, max_length: int,
                path: Path, title: str) -> Image:
    """Tokens per example (every example measured, dropped ones included) with the recipe's and the chosen
    max_length, beside the trained fraction of each kept example."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3))
    over = sum(n > max_length for n in lengths)
    left.hist(lengths, bins=40, color="#4c72b0")
    left.axvline(recipe_max_length, color="#c44e52", linestyle="--", label=f"recipe max_length {recipe_max_length}")
    if max_length != recipe_max_length:
        left.axvline(max_length, color="#55a868", linestyle="-", label=f"fitted max_length {max_length}")
    left.set(xlabel="tokens per example (chat template, as trained)", ylabel="examples",
             title=f"{title}: {over} of {len(lengths)} over max_length")
    left.legend(fontsize=8)
    right.hist(trained_fractions, bins=30, range=(0, 1), color="#55a868")
    right.set(xlabel="trained fraction of the example's tokens", ylabel="examples", title="response-only mask")
    return _saved(fig, path)


def loss_plot(log_history: list[dict], path: Path, title: str) -> Image | Markdown:
    """Training loss per optimizer step, from the trainer's log history, with the learning rate of the same steps on
    a second axis (a note when nothing was trained)."""
    points = [(row["step"], row["loss"]) for row in log_history if "loss" in row]
    if not points:
        return note("No loss curve: nothing was trained (a dry-run validates on the meta device).")
    plt = _pyplot()
    steps, losses = zip(*points)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(steps, losses, marker="o", markersize=3, label="training loss")
    ax.set(xlabel="optimizer step", ylabel="training loss (response tokens)", title=title)
    ax.grid(alpha=0.3)
    rates = [(row["step"], row["learning_rate"]) for row in log_history if "loss" in row and "learning_rate" in row]
    if rates:
        lr_axis = ax.twinx()
        lr_axis.plot(*zip(*rates), color="#c44e52", linestyle="--", linewidth=1, label="learning rate")
        lr_axis.set_ylabel("learning rate", color="#c44e52")
        lr_axis.tick_params(axis="y", labelcolor="#c44e52", labelsize=8)
        lr_axis.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    return _saved(fig, path)


def reward_plot(curves: list[dict], path: Path, title: str) -> Image | Markdown:
    """GRPO per logged step (`lib.grpo.stage.reward_curves`): each reward's mean and the weighted total on the left;
    completion length and the share cut at the limit on the right (a note when nothing was trained)."""
    if not curves:
        return note("No reward curve: nothing was trained (a dry-run plans GRPO, it does not run it).")
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    steps = [row["step"] for row in curves]
    for key, style in (("reward", "-"), ("correctness", "-"), ("format", "--"), ("overlong", ":")):
        left.plot(steps, [row[key] for row in curves], style, marker="o", markersize=2, linewidth=0.8, label=key)
    kl = [(row["step"], row["kl"]) for row in curves if row.get("kl") is not None]
    if kl:  # logged when beta > 0
        left.plot(*zip(*kl), color="grey", linestyle="-.", linewidth=0.8, label="KL to the start")
    window = 5  # one step judges a group or two: the mean of the last five shows the trend
    correct = [row["correctness"] for row in curves]
    if len(correct) >= window:
        trend = [sum(correct[i - window + 1:i + 1]) / window for i in range(window - 1, len(correct))]
        left.plot(steps[window - 1:], trend, color="black", linewidth=2, label=f"correctness, mean of {window}")
    left.set(xlabel="GRPO step", ylabel="mean reward of the step's completions", title=title)
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    right.plot(steps, [row["length"] for row in curves], color="#4c72b0", label="mean completion tokens")
    right.set(xlabel="GRPO step", ylabel="completion tokens", title="length and completions cut at the limit")
    cut = right.twinx()
    cut.plot(steps, [row["clipped"] for row in curves], color="#c44e52", linestyle="--", label="cut share")
    cut.set_ylim(0, 1)
    cut.set_ylabel("share cut at max_completion_length", color="#c44e52")
    right.legend(handles=right.get_lines() + cut.get_lines(), fontsize=8, loc="upper left")
    return _saved(fig, path)


def distillation_plot(log_history: list[dict], path: Path, title: str, alpha: float, temperature: float
                      ) -> Image | Markdown:
    """The two terms of the distillation loss per optimizer step, as they enter it: alpha·T²·KL(teacher‖student)
    and (1 − alpha)·CE, with their sum (a note when the run trained without a teacher)."""
    rows = [row for row in log_history if "kl" in row and "ce" in row and "loss" in row]
    if not rows:
        return note("No distillation terms: this run trained without a teacher (plain SFT) or trained nothing.")
    plt = _pyplot()
    steps = [row["step"] for row in rows]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(steps, [alpha * temperature**2 * row["kl"] for row in rows], marker="o", markersize=3,
            label=f"{alpha:g}·T²·KL (T={temperature:g})")
    ax.plot(steps, [(1 - alpha) * row["ce"] for row in rows], marker="o", markersize=3, label=f"{1 - alpha:g}·CE")
    ax.plot(steps, [row["loss"] for row in rows], color="grey", linewidth=1, label="loss (their sum)")
    ax.set(xlabel="optimizer step", ylabel="loss term (response tokens)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _saved(fig, path)


def eval_rows(results: list[dict]) -> list[dict]:
    """One table row per (file, benchmark) of 05's results: what a reader compares across quants."""
    rows = []
    for r in results:
        k = r["k"]
        row = {"file": r["label"], "benchmark": f"{r['benchmark']} ({r['problems']}×{k})",
               "pass@1 [95 % CI]": percent_interval(r["pass@1"])}
        if k > 1:
            row[f"maj@{k}"] = percent_interval(r[f"maj@{k}"])
        row |= {"closed </think>": f"{r['closure_rate']:.0%}", "hit max tokens": f"{r['truncation_rate']:.0%}",
                "loops": f"{r['loop_rate']:.0%}", "think tokens p50/p90": _p50_p90(r["think_tokens"]),
                "tok/s (one chat)": r["tokens_per_second"],
                "tok/s (all sequences)": r.get("aggregate_tokens_per_second"), "TTFT s": r["ttft_seconds"]["p50"],
                "peak RSS MiB": r["peak_rss_mib"]}
        rows.append(row)
    return rows


def ladder_rows(quant_ladder: dict[str, list[dict]]) -> list[dict]:
    """One row per (benchmark, quant, metric) of 05's quant ladder: the reference (F16 unless too large to judge or
    not in eval_files), the quant, the drop with its interval."""
    rows = []
    for benchmark, entries in quant_ladder.items():
        for row in entries:
            rows.append({"benchmark": benchmark, "file": row["file"], "metric": row["metric"],
                         "reference": f"{row['reference_file'].removeprefix('distilled-')} {row['reference']:.0%}",
                         "quant": f"{row['quant']:.0%}",
                         "drop (points) [95 % CI]": points_interval(row["drop"], digits=0),
                         "limit": f"{100 * row['max_drop']:.0f}" if row["max_drop"] is not None else "–",
                         "flag": "⚠ past the limit" if row["flagged"] else ""})
    return rows


def points_interval(change: dict, digits: int = 1) -> str:
    """A paired difference ({"mean", "low", "high"}, shares) as percentage points with its interval:
    "+3.0 [-1.0, +7.0]" (`digits` after the point)."""
    return f"{100 * change['mean']:+.{digits}f} [{100 * change['low']:+.{digits}f}, {100 * change['high']:+.{digits}f}]"


def gain_rows(gains: list[dict]) -> list[dict]:
    """One row per (benchmark, file, metric) of 06's SFT+GRPO minus SFT, paired by problem."""
    return [{"benchmark": g["benchmark"], "file": g["file"], "metric": g["metric"], "problems": g["problems"],
             "SFT": f"{g['SFT']:.1%}", "SFT+GRPO": f"{g['SFT+GRPO']:.1%}",
             "change (points) [95 % CI, paired]": points_interval(g["change"]) if g["change"]["mean"] is not None
             else "–"} for g in gains]


def budget_rows(curve: list[dict]) -> list[dict]:
    """05's think-budget curve as table rows: one per (file, budget)."""
    return [{"file": row["file"], "think budget": row["budget"] or "none", "pass@1 [95 % CI]":
             percent_interval(row["pass@1"]), "closed by itself": f"{row['closed_by_itself']:.0%}",
             "closed by the budget": f"{row['closed_by_budget']:.0%}", "mean think tokens": row["think_tokens_mean"],
             "mean tokens": row["completion_tokens_mean"]} for row in curve]


def budget_chart(curve: list[dict], path: Path, title: str) -> Image | Markdown:
    """pass@1 (with its interval) and mean think tokens against the think budget, one line per file; "none" (no
    budget) at the right."""
    if not any(row["budget"] for row in curve):
        return note("No think-budget curve: the recipe names no eval_think_budgets (or no model was run).")
    plt = _pyplot()
    budgets = sorted({row["budget"] for row in curve if row["budget"]})
    x_of = {b: i for i, b in enumerate(budgets)} | {None: len(budgets)}
    fig, (acc, think) = plt.subplots(1, 2, figsize=(9, 3.2))
    for file in dict.fromkeys(row["file"] for row in curve):
        rows = [row for row in curve if row["file"] == file]
        xs = [x_of[row["budget"]] for row in rows]
        means = [100 * (row["pass@1"]["mean"] or 0) for row in rows]
        errors = [[m - 100 * (row["pass@1"]["low"] or 0) for m, row in zip(means, rows)],
                  [100 * (row["pass@1"]["high"] or 0) - m for m, row in zip(means, rows)]]
        acc.errorbar(xs, means, yerr=errors, marker="o", capsize=3, label=file)
        think.plot(xs, [row["think_tokens_mean"] or 0 for row in rows], marker="o", label=file)
    for ax, ylabel in ((acc, "pass@1 % (95 % CI)"), (think, "mean think tokens")):
        ax.set_xticks(list(x_of.values()), [str(b) for b in budgets] + ["none"])
        ax.set(xlabel="think budget (tokens)", ylabel=ylabel)
    acc.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _saved(fig, path)


def _p50_p90(lengths: dict) -> str:
    return "–" if not lengths["count"] else f"{lengths['p50']:.0f} / {lengths['p90']:.0f}"


def accuracy_chart(results: list[dict], path: Path, title: str) -> Image | Markdown:
    """Per benchmark: pass@1 with its 95 % interval and the `</think>` closure rate of each judged file."""
    if not results:
        return note("No chart: no model was run (dry-run).")
    plt = _pyplot()
    benchmarks = list(dict.fromkeys(r["benchmark"] for r in results))
    fig, axes = plt.subplots(1, len(benchmarks), figsize=(max(7, 4.5 * len(benchmarks)), 3.6), squeeze=False)
    for ax, benchmark in zip(axes[0], benchmarks):
        rows = [r for r in results if r["benchmark"] == benchmark]
        x = range(len(rows))
        means = [100 * (r["pass@1"]["mean"] or 0) for r in rows]
        errors = [[m - 100 * (r["pass@1"]["low"] or 0) for m, r in zip(means, rows)],
                  [100 * (r["pass@1"]["high"] or 0) - m for m, r in zip(means, rows)]]
        ax.bar([i - 0.2 for i in x], [100 * r["closure_rate"] for r in rows], 0.4, label="</think> closed %")
        ax.bar([i + 0.2 for i in x], means, 0.4, yerr=errors, capsize=3, label="pass@1 % (95 % CI)")
        ax.set_xticks(list(x), [r["label"].replace("-no-", "\nno-") for r in rows], fontsize=7)
        ax.set(ylim=(0, 105), title=f"{benchmark}: {rows[0]['problems']} problems × k={rows[0]['k']}")
        ax.tick_params(axis="y", labelsize=8)
    axes[0][0].set_ylabel("%")
    axes[0][0].legend(loc="upper left", fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _saved(fig, path)


def think_length_histograms(samples: dict[str, list[dict]], path: Path, title: str) -> Image | Markdown:
    """Think length (tokens) of the samples that closed their thought, one histogram per file; the samples that
    never closed are counted in each title."""
    if not samples:
        return note("No histogram: no model was run (dry-run).")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(samples), figsize=(3 * len(samples), 2.6), sharex=True, squeeze=False)
    longest = max([s["think_tokens"] for group in samples.values() for s in group] + [1])
    for ax, (label, group) in zip(axes[0], samples.items()):
        closed = [s["think_tokens"] for s in group if s["closed_think"]]
        ax.hist(closed, bins=20, range=(0, longest))
        ax.set_title(f"{label}\n{len(group) - len(closed)} of {len(group)} never closed", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("think tokens", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _saved(fig, path)


def note(text: str) -> Markdown:
    """A short italic remark (e.g. why a dry-run shows no picture here)."""
    return Markdown(f"_{text}_")
