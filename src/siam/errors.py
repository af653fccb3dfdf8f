"""Project error types. Every user-facing failure raises one of these with a message that says
what was received and what is allowed."""

from __future__ import annotations


class SiamError(Exception):
    """Base class for errors the CLI reports as one clear line (no traceback)."""


class ImageDecodeError(SiamError, ValueError):
    """An image file could not be decoded safely: names the file and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DatasetError(SiamError, ValueError):
    """A dataset folder or file is missing, malformed, or has too many bad entries."""


class CheckpointError(SiamError, ValueError):
    """A checkpoint is missing, malformed, or does not match what was asked for."""


class ConfigError(SiamError, ValueError):
    """A configuration key or value is not allowed."""
