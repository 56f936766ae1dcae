"""Options and helpers several commands share: the response cache, progress, replayed runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from taskmem_lab.errors import ConfigError


def add_cache_args(p: argparse.ArgumentParser) -> None:
    """`--cache FILE` / `--no-cache` and `-q/--quiet`."""
    p.add_argument(
        "--cache",
        help="response cache file "
        "(default: $TASKMEM_CACHE or ~/.cache/taskmem_lab/responses.sqlite)",
    )
    p.add_argument(
        "--no-cache", action="store_true", help="do not read or write the response cache"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def cache_setting(args: argparse.Namespace) -> bool | str:
    """`--cache FILE` / `--no-cache` as the pipeline's `cache` argument (True: the default file)."""
    return False if args.no_cache else (args.cache or True)


def response_cache(args: argparse.Namespace) -> Any:
    """The `ResponseCache` that `--cache FILE` / `--no-cache` ask for (None: no cache)."""
    from taskmem_lab.backends import open_cache

    return open_cache(cache_setting(args))


def read_supplement(value: str) -> str:
    """`--supplement-prompt`: the text itself, or `@FILE` to read it from a file."""
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            return path.read_text(encoding="utf-8").strip()
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"--supplement-prompt {value}: {path} is not UTF-8 text (byte {exc.start}: "
                f"{exc.reason})"
            ) from None
    return value
