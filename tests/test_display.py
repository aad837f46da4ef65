"""lib.display: what every notebook shows renders as Markdown tables, notes or PNGs (never a bare JSON display)."""
from lib.display import (accuracy_chart, eval_rows, facts_table, loss_plot, markdown_table, rejects_table, table,
                         think_length_histograms)


def test_markdown_table_formats_cells_and_cuts_long_ones():
    text = markdown_table([{"a": 12345, "b": 0.123456, "c": {"x": 1}, "d": None, "e": "p|q " + "z" * 200}])
    header, rule, row = text.splitlines()
    assert header == "| a | b | c | d | e |" and rule == "|---|---|---|---|---|"
    assert row.startswith("| 12,345 | 0.1235 | x: 1 | – | p\\|q zz") and row.endswith("… |")


def test_empty_inputs_become_notes_not_errors(tmp_path):
    assert facts_table(None, empty="No teacher.").data == "_No teacher._"
    assert table([], empty="Nothing ran.").data == "_Nothing ran._"
    assert "nothing was trained" in loss_plot([], tmp_path / "l.png", "t").data
    assert "no model was run" in accuracy_chart([], tmp_path / "r.png", "t").data
    assert "no model was run" in think_length_histograms({}, tmp_path / "h.png", "t").data
    assert not (tmp_path / "l.png").exists()


def test_rejects_table_shows_counts_and_first_lines():
    text = rejects_table({"malformed JSON": 2}, {"malformed JSON": [{"line": 3, "id": "x", "detail": "col 1"}]},
                         {"held-out: empty": 1}).data
    assert "| malformed JSON | 2 | 3 (col 1) |" in text and "| held-out: empty | 1 |  |" in text
    assert rejects_table({}, {}).data == "No row was rejected or removed."


def test_pictures_are_written_as_png(tmp_path):
    image = loss_plot([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}], tmp_path / "l.png", "t")
    assert image.data[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "l.png").stat().st_size > 1000
    results = [result("base", "heldout"), result("distilled-Q8_0", "heldout"), result("base", "math500")]
    assert accuracy_chart(results, tmp_path / "r.png", "t").data[:4] == b"\x89PNG"
    samples = {"base": [{"think_tokens": 0, "closed_think": False}],
               "distilled-Q8_0": [{"think_tokens": 80, "closed_think": True}, {"think_tokens": 120, "closed_think": True}]}
    assert think_length_histograms(samples, tmp_path / "h.png", "t").data[:4] == b"\x89PNG"


def result(label, benchmark, k=4):
    interval = {"mean": 0.25, "low": 0.1, "high": 0.4}
    return {"label": label, "benchmark": benchmark, "problems": 20, "k": k, "pass@1": interval, f"maj@{k}": interval,
            "closure_rate": 0.9, "truncation_rate": 0.1, "loop_rate": 0.05, "tokens_per_second": 99.5,
            "think_tokens": {"count": 18, "p50": 80.0, "p90": 150.0}, "ttft_seconds": {"p50": 0.12},
            "peak_rss_mib": 300.0}


def test_eval_rows_show_intervals_and_majority_votes_only_for_k_above_1():
    rows = eval_rows([result("distilled-Q8_0", "math500"), result("base", "heldout", k=1)])
    assert rows[0]["pass@1 [95 % CI]"] == "25 % [10–40]" and rows[0]["maj@4"] == "25 % [10–40]"
    assert rows[0]["benchmark"] == "math500 (20×4)" and rows[0]["think tokens p50/p90"] == "80 / 150"
    assert "maj@1" not in rows[1]


def test_ladder_rows_show_the_drop_with_its_interval_and_the_flag():
    entry = {"file": "distilled-Q4_K_M", "metric": "closure", "reference_file": "distilled-F16", "reference": 1.0,
             "quant": 0.7, "max_drop": 0.1,
             "drop": {"mean": 0.3, "low": 0.1, "high": 0.5}, "flagged": True}
    from lib.display import ladder_rows

    row = ladder_rows({"heldout": [entry]})[0]
    assert row["drop (points) [95 % CI]"] == "+30 [+10, +50]" and row["flag"] == "⚠ past the limit"
    assert row["reference"] == "F16 100%"


def test_the_loss_plot_draws_the_learning_rate_on_its_own_axis(tmp_path, monkeypatch):
    import matplotlib.figure

    axes = []
    saved = matplotlib.figure.Figure.savefig

    def keep_axes(fig, *args, **kwargs):
        axes.extend(fig.axes)
        return saved(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep_axes)
    log = [{"step": s, "loss": 2.0 / s, "learning_rate": 2e-4 * (1 - s / 4)} for s in (1, 2, 3)]
    loss_plot(log, tmp_path / "l.png", "t")
    assert [ax.get_ylabel() for ax in axes] == ["training loss (response tokens)", "learning rate"]
    assert list(axes[1].lines[0].get_ydata()) == [row["learning_rate"] for row in log]
    axes.clear()
    loss_plot([{"step": 1, "loss": 2.0}], tmp_path / "m.png", "t")  # a log without rates: one axis
    assert len(axes) == 1
