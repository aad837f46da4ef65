"""A decoding child ends with the process that started it (lib.evaluate.generate.die_with_parent)."""
import os
import signal
import subprocess
import sys
import time

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_ends_when_its_parent_is_killed(tmp_path):
    pid_file = tmp_path / "child.pid"
    child = ("import os, sys, time; from lib.evaluate.generate import die_with_parent; die_with_parent(); "
             f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)")
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"])
    deadline = time.time() + 60
    while not (pid_file.is_file() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    child_pid = int(pid_file.read_text())
    os.kill(parent.pid, signal.SIGKILL)  # as a kernel killed mid-evaluation
    parent.wait()
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            return  # gone
        if open(f"/proc/{child_pid}/stat").read().split()[2] == "Z":  # a zombie no one reaps: ended too
            return
        time.sleep(0.1)
    os.kill(child_pid, signal.SIGKILL)
    pytest.fail("the child outlived its parent by 20 s")
