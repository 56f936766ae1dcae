"""Shared bits of the fault suite: a small request, the one-line-error check, a tmpfs mount."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from taskmem_lab.backends import Message, Request
from taskmem_lab.backends.base import TextPart, VideoPart
from taskmem_lab.media.video import Frame


def request(text: str = "NEW SPAN: 00:00:00-00:00:10") -> Request:
    frames = tuple(Frame(float(i), np.full((16, 16, 3), 40 * i, np.uint8)) for i in range(2))
    parts = (TextPart(text), VideoPart(frames, fps=1.0))
    return Request(
        (Message.text("system", "write memory"), Message("user", parts)), purpose="episodic"
    )


def one_line_error(proc: subprocess.CompletedProcess[str], pattern: str, code: int = 2) -> str:
    """The command failed with `code` and exactly one `taskmem: error` line matching `pattern`,
    no traceback."""
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("taskmem: error")]
    assert len(lines) == 1 and re.search(pattern, lines[0]), proc.stderr
    return lines[0]


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1m") -> Iterator[Path]:
    """A small tmpfs at `path` (root only); the test is skipped, with the reason, elsewhere."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; read-only/full filesystem cases not run")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)
