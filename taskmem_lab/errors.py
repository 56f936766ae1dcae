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
    """A model reply could not be parsed into the expected JSON object."""


class StoreError(TaskmemError):
    """A run directory is inconsistent with the requested run."""


class UnsafePickleError(TaskmemError):
    """A pickle tried to load a class outside the allow-list."""
