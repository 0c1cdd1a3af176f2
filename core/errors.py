"""Errors a user can act on: each carries what went wrong and what to do next."""


class WorkbenchError(Exception):
    """Base class. `hint` says what the user can do about it."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  → {self.hint}" if self.hint else self.message


class ModelNotFoundError(WorkbenchError):
    pass


class AudioError(WorkbenchError):
    pass


class BackendUnavailableError(WorkbenchError):
    """The runtime a backend needs is not installed or has no usable device."""


class ExportError(WorkbenchError):
    pass


class ParityError(ExportError):
    """An exported/converted model disagrees with its reference beyond tolerance."""


class ManifestError(WorkbenchError):
    pass


class NotBuiltError(WorkbenchError):
    """The artifact a backend needs has not been built (or only a rejected one exists): backends never build."""


class StorageError(WorkbenchError):
    """The artifacts folder (or a file in it) cannot be written: read-only, full, or not permitted."""
