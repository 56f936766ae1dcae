"""Specific exceptions with actionable messages; the CLI prints them as one line."""

from __future__ import annotations


class TaskmemError(Exception):
    """Base class: anything the user can fix from the message alone."""


class VideoError(TaskmemError):
    """A video is missing, unreadable or has no usable frames."""


class ConfigError(TaskmemError):
    """Endpoint configuration or parameters are missing or invalid."""


class ModelSpecError(ConfigError):
    """A model spec names no known backend."""


class ModelError(TaskmemError):
    """A model call failed after its retries (unreachable server, refused request, ...)."""


class ParseError(TaskmemError):
    """A model reply could not be parsed into the expected JSON object.

    `replies` holds the model replies that led to it (so their usage and text are recorded) and
    `problems` what was wrong with each.
    """

    def __init__(
        self,
        message: str,
        replies: list | None = None,  # type: ignore[type-arg]
        problems: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.replies = list(replies or [])
        self.problems = list(problems or [])


class StoreError(TaskmemError):
    """A run directory is inconsistent with the requested run."""


class LockedError(StoreError):
    """Another process is writing the same run or perception folder."""


class UnsafePickleError(TaskmemError):
    """A pickle tried to load a class outside the allow-list."""


class BenchmarkError(TaskmemError):
    """A benchmark source or converted dataset is missing, malformed or of the wrong schema."""


class NoAudioError(VideoError):
    """A stream window has no audio track at all (as opposed to silence); callers may skip ASR."""


class PluginError(TaskmemError):
    """A user plug-in module (TASKMEM_*_BACKEND) is missing, failed, or returned the wrong shape."""


class ReplayError(StoreError):
    """A stored run cannot be replayed exactly (missing source, changed prompt, hash mismatch)."""


class MissingExtraError(ConfigError, ImportError):
    """An optional backend cannot be imported; the message names the extra to install.

    Also an `ImportError`, so code that probes for an optional package keeps working.
    """


def missing_extra(what: str, extra: str, cause: BaseException | None = None) -> MissingExtraError:
    """One clear line for an optional backend that failed to import (the cause's first line
    appended, e.g. a dependency of the backend that is itself missing)."""
    detail = ""
    if cause is not None:
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
        detail = f" ({type(cause).__name__}: {first})"
    return MissingExtraError(
        f"{what} cannot be imported{detail}: pip install 'taskmem_lab[{extra}]'"
    )


class SteerError(ConfigError):
    """A steer adapter (file, checkpoint weights or layers) is missing, malformed or does not fit."""
