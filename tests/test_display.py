"""lib.display: what every notebook shows renders as Markdown tables, notes or PNGs (never a bare JSON display)."""
from lib.display import facts_table, loss_plot, markdown_table, rejects_table, results_chart, table


def test_markdown_table_formats_cells_and_cuts_long_ones():
    text = markdown_table([{"a": 12345, "b": 0.123456, "c": {"x": 1}, "d": None, "e": "p|q " + "z" * 200}])
    header, rule, row = text.splitlines()
    assert header == "| a | b | c | d | e |" and rule == "|---|---|---|---|---|"
    assert row.startswith("| 12,345 | 0.1235 | x: 1 | – | p\\|q zz") and row.endswith("… |")


def test_empty_inputs_become_notes_not_errors(tmp_path):
    assert facts_table(None, empty="No teacher.").data == "_No teacher._"
    assert table([], empty="Nothing ran.").data == "_Nothing ran._"
    assert "nothing was trained" in loss_plot([], tmp_path / "l.png", "t").data
    assert "no model was run" in results_chart([], tmp_path / "r.png", "t").data
    assert not (tmp_path / "l.png").exists()


def test_rejects_table_shows_counts_and_first_lines():
    text = rejects_table({"malformed JSON": 2}, {"malformed JSON": [{"line": 3, "id": "x", "detail": "col 1"}]},
                         {"held-out: empty": 1}).data
    assert "| malformed JSON | 2 | 3 (col 1) |" in text and "| held-out: empty | 1 |  |" in text
    assert rejects_table({}, {}).data == "No row was rejected or removed."


def test_pictures_are_written_as_png(tmp_path):
    image = loss_plot([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}], tmp_path / "l.png", "t")
    assert image.data[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "l.png").stat().st_size > 1000
    results = [{"label": "base", "closure_rate": 0.5, "accuracy": 0.1, "tokens_per_second": 10.0}]
    assert results_chart(results, tmp_path / "r.png", "t").data[:4] == b"\x89PNG"
