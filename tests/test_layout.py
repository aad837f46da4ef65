"""The layout of lib/: one folder per stage, no import circles, no lib import hidden in a function, data flows
01 -> 05 (no stage imports a later one), the shared foundation imports no stage (tools/import_graph.py)."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
import_graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_graph)


def test_lib_breaks_none_of_the_layout_rules():
    assert import_graph.problems() == []


def test_every_stage_has_its_folder_and_stage_module():
    for stage in import_graph.STAGES:
        assert (ROOT / "lib" / stage / "stage.py").is_file()


def test_the_checker_sees_a_hidden_import_and_a_circle(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from lib.paths import PROJECT_ROOT\n\ndef f():\n    from lib.recipe import load_recipe\n")
    assert import_graph.imports(source) == [("lib.paths", False), ("lib.paths.PROJECT_ROOT", False),
                                            ("lib.recipe", True), ("lib.recipe.load_recipe", True)]
    assert import_graph.circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_checker_flags_relative_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from .paths import PROJECT_ROOT\n")
    assert import_graph.imports(source) == [("relative import (level 1) of paths", False)]
