"""`taskmem reproduce`: run the stage notebooks with papermill (tables, figures)."""

from __future__ import annotations

import argparse

from taskmem_lab.errors import ConfigError


def reproduce_command(args: argparse.Namespace) -> int:
    from taskmem_lab.lab.reproduce import reproduce

    overrides = {}
    for item in args.param or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"-p expects key=value (or NOTEBOOK.key=value), got {item!r}")
        overrides[key] = value
    done = reproduce(args.profile, only=args.only or (), overrides=overrides, work=args.work)
    print(f"executed {len(done)} notebook(s): {', '.join(str(p) for p in done)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `reproduce`."""
    from taskmem_lab.lab.reproduce import PROFILES

    rp = sub.add_parser(
        "reproduce", help="run the stage notebooks with papermill (tables, figures)"
    )
    rp.add_argument(
        "--profile",
        default=PROFILES[0],
        choices=PROFILES,
        help="smoke: offline, generated media, a fake model (minutes on 2 cores); demo: "
        "downloads real models from the Hugging Face hub on first use; paper: needs your "
        "endpoints in $TASKMEM_API_CONFIG and the benchmark videos",
    )
    rp.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only this notebook (repeatable), e.g. 03_episodic",
    )
    rp.add_argument(
        "-p",
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="override a parameter (NOTEBOOK.key=value for one notebook)",
    )
    rp.add_argument(
        "--work",
        help="folder for everything the run makes: executed notebooks, figures, tables, data "
        "(relative to the current folder; default: runs/reproduce/<profile>)",
    )
    rp.set_defaults(func=reproduce_command)
