"""The option tables of `docs/cli.md`, made from the parser so the page cannot drift from the code.

    python -m taskmem_lab.cli.docs docs/cli.md          # rewrite the tables in place
    python -m taskmem_lab.cli.docs docs/cli.md --check  # exit 1 when a table is out of date

A table sits between `<!-- options: COMMAND -->` and `<!-- /options -->` lines; everything else
on the page is written by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from taskmem_lab.cli import build_parser

_BLOCK = re.compile(r"(<!-- options: (?P<cmd>[\w-]+) -->\n)(?P<body>.*?)(<!-- /options -->)", re.S)


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def options_table(command: str) -> str:
    """A Markdown table of one command's arguments: option, default, meaning."""
    sub = _commands(build_parser())[command]
    rows = ["| option | default | meaning |", "| --- | --- | --- |"]
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action.option_strings:
            name = ", ".join(f"`{s}`" for s in action.option_strings)
            if action.nargs != 0 and action.metavar is not None:
                name += f" {action.metavar}"
            elif action.choices and action.nargs != 0:
                name += " {" + "\\|".join(str(c) for c in action.choices) + "}"
        else:
            name = f"`{action.dest.upper()}`"
            if action.choices:
                name += " {" + "\\|".join(str(c) for c in action.choices) + "}"
        if action.required:
            default = "required"
        elif action.nargs == 0 or action.default in (None, ""):
            default = ""
        elif isinstance(action.default, list | tuple):
            default = " ".join(str(v) for v in action.default)
        else:
            default = (
                f"`{action.default:g}`"
                if isinstance(action.default, float)
                else f"`{action.default}`"
            )
        meaning = action.help or ""
        if default and default != "required":  # the column says it; generated help repeats it
            meaning = re.sub(r" \(default: [^)]*\)$", "", meaning)
        rows.append(f"| {name} | {default} | {_cell(meaning)} |")
    return "\n".join(rows) + "\n"


def render_page(text: str) -> str:
    """`text` with every marked options table regenerated."""

    def fill(m: re.Match[str]) -> str:
        return m.group(1) + options_table(m.group("cmd")) + m.group(4)

    return _BLOCK.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with --check, verify) the option tables of a Markdown page."""
    p = argparse.ArgumentParser(prog="python -m taskmem_lab.cli.docs")
    p.add_argument("page", help="Markdown page with <!-- options: COMMAND --> blocks")
    p.add_argument("--check", action="store_true", help="only report whether it is up to date")
    args = p.parse_args(argv)
    path = Path(args.page)
    old = path.read_text(encoding="utf-8")
    new = render_page(old)
    if args.check:
        if new != old:
            print(
                f"{path}: option tables are out of date; run python -m taskmem_lab.cli.docs {path}"
            )
            return 1
        return 0
    if new != old:
        path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
