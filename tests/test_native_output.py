"""lib.native_output: what C code writes to file descriptor 2 goes to the log file, and only for the block."""
import ctypes
import os

from lib.native_output import log_tail, native_stderr_to


def test_fd2_writes_go_to_the_log_and_stderr_comes_back(tmp_path, capfd):
    libc = ctypes.CDLL(None)
    log = tmp_path / "logs" / "quantize.log"
    os.write(2, b"before\n")
    with native_stderr_to(log):
        os.write(2, b"[ 1/272] token_embd.weight converting to q8_0\n")
        libc.dprintf(2, b"from C: %d tensors\n", 272)
        print("from llama-cpp-python's log callback", file=__import__("sys").stderr, flush=True)
    os.write(2, b"after\n")
    captured = capfd.readouterr().err
    assert captured == "before\nafter\n"
    assert log.read_text() == ("[ 1/272] token_embd.weight converting to q8_0\nfrom C: 272 tensors\n"
                               "from llama-cpp-python's log callback\n")
    assert log_tail(log, 1) == "from llama-cpp-python's log callback" and log_tail(tmp_path / "none.log") == ""


def test_a_failed_load_names_the_log_and_quotes_its_end(tmp_path):
    import pytest

    from lib.native_output import llama_cpp_logged_to

    log = tmp_path / "round_trip.log"
    with pytest.raises(ValueError, match=r"Failed to load model .*round_trip.log\) ends:\nllama_model_load: bad magic"):
        with llama_cpp_logged_to(log):
            os.write(2, b"llama_model_load: bad magic\n")
            raise ValueError("Failed to load model from file")
