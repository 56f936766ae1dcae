"""Figures and tables with provenance: every output says which notebook, parameters and inputs made it.

Floor 7. `save_figure(fig, name)` writes `figures/<name>.png`, `.pdf` and `<name>.json` (notebook,
parameters, package version, git commit, input files with sha256, whether any model was fake);
`save_table(df, name)` writes markdown and LaTeX beside the figures with the same provenance.
Parameters pass through `redact` so nothing that looks like a key is ever written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import taskmem_lab
from taskmem_lab.paths import file_sha256
from taskmem_lab.store import atomic_write_json

FIGURES_ENV = "TASKMEM_FIGURES"
_SECRET_KEY = re.compile(r"(key|token|secret|password)", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"^(sk-|hf_|AIza)[A-Za-z0-9_\-]{8,}")


def figures_dir() -> Path:
    return Path(os.environ.get(FIGURES_ENV, "figures"))


def redact(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters safe to write: key-like names or values are replaced by a marker."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if _SECRET_KEY.search(k) or (isinstance(v, str) and _SECRET_VALUE.match(v)):
            out[k] = "<redacted>"
        else:
            out[k] = v
    return out


def git_commit(path: str | Path = ".") -> str | None:
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


@dataclass
class Provenance:
    """What made an output; notebooks build one from their parameters and inputs."""

    notebook: str
    parameters: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    fake_model: bool = False

    def to_json(self) -> dict[str, Any]:
        inputs = []
        for p in self.inputs:
            path = Path(p)
            if path.is_file():
                inputs.append(
                    {"path": str(p), "sha256": file_sha256(path), "size": path.stat().st_size}
                )
            elif path.is_dir():
                files = sorted(f for f in path.rglob("*") if f.is_file())
                digest = hashlib.sha256()
                for f in files:
                    digest.update(str(f.relative_to(path)).encode())
                    digest.update(file_sha256(f).encode())
                inputs.append({"path": str(p), "sha256": digest.hexdigest(), "files": len(files)})
            else:
                inputs.append({"path": str(p), "missing": True})
        return {
            "notebook": self.notebook,
            "parameters": redact(self.parameters),
            "taskmem_lab": taskmem_lab.__version__,
            "git_commit": git_commit(),
            "inputs": inputs,
            "fake_model": self.fake_model,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }


def save_figure(
    fig: Any, name: str, provenance: Provenance, directory: str | Path | None = None
) -> Path:
    """PNG + PDF + provenance JSON; a figure made with a fake model says so in its corner."""
    out = Path(directory) if directory is not None else figures_dir()
    out.mkdir(parents=True, exist_ok=True)
    if provenance.fake_model:
        fig.text(
            0.99,
            0.01,
            "fake model output: not a result",
            ha="right",
            va="bottom",
            fontsize=7,
            color="red",
        )
    fig.savefig(out / f"{name}.png", dpi=150, bbox_inches="tight")
    fig.savefig(out / f"{name}.pdf", bbox_inches="tight")
    atomic_write_json(out / f"{name}.json", provenance.to_json())
    return out / f"{name}.png"


def save_table(
    table: Any, name: str, provenance: Provenance, directory: str | Path | None = None
) -> Path:
    """A pandas DataFrame as markdown and LaTeX, with provenance JSON."""
    out = Path(directory) if directory is not None else figures_dir()
    out.mkdir(parents=True, exist_ok=True)
    note = "\n\n*Made with a fake model: not a result.*\n" if provenance.fake_model else "\n"
    (out / f"{name}.md").write_text(table.to_markdown(index=False) + note, encoding="utf-8")
    (out / f"{name}.tex").write_text(
        table.to_latex(index=False, float_format="%.3f"), encoding="utf-8"
    )
    atomic_write_json(out / f"{name}.json", provenance.to_json())
    return out / f"{name}.md"


def any_fake(specs: Iterable[str]) -> bool:
    return any(str(s).split(":", 1)[0] == "fake" for s in specs)
