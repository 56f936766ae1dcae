"""Run the `taskmem` command in a subprocess, as a user would, for end-to-end tests.

The command runs with this interpreter (`python -m taskmem_lab.cli`), so it sees the same
installation as the tests; `env` adds to (never replaces) the current environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any


def taskmem(
    *args: Any, env: Mapping[str, str] | None = None, check: bool = True, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """`taskmem ARGS...` with output captured as text; with `check`, a failure is an
    `AssertionError` that shows the command's stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "taskmem_lab.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
        **kw,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"taskmem {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc
