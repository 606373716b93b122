"""The project's error types.

Every error a user can cause (a bad file, a bad option, missing weights) is an
``OsteopanoError``; the CLI prints it as one line and exits with status 2,
never with a traceback.
"""

from __future__ import annotations

from pathlib import Path


class OsteopanoError(Exception):
    """Base class for errors that are the user's input, not a bug."""


class ImageReadError(OsteopanoError):
    """A file could not be read as a radiograph. Carries the file name and the reason."""

    def __init__(self, path: str | Path | None, reason: str):
        self.path = str(path) if path is not None else "<memory>"
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DataError(OsteopanoError):
    """A data set (folder or manifest) is unusable: empty, one class, bad label map..."""


class ModelError(OsteopanoError):
    """A model or run folder is missing, incomplete or incompatible; weights unavailable."""
