"""Specific exceptions with messages a user can act on.

The CLI turns any ``EdgeError`` into one clear line and a non-zero exit; the HTTP layer (later) into a
JSON error with a 4xx status. Anything that is not an ``EdgeError`` is a bug and is allowed to surface.
"""


class EdgeError(Exception):
    """Base for every error the device reports to a user."""


class ConfigError(EdgeError):
    """The configuration (file, environment or flags) is invalid."""


class ImageError(EdgeError):
    """An input image cannot be used: unreadable, corrupt, empty or too large."""


class CameraUnavailable(EdgeError):
    """A camera source cannot be opened or has stopped delivering frames."""


class SourceFinished(CameraUnavailable):
    """A replay that does not loop has delivered its last frame: reopening would only start it again."""


class ModelError(EdgeError):
    """A model pack is missing, malformed, or fails its checksum."""


class BackendUnavailable(EdgeError):
    """An inference backend cannot run here (missing runtime, delegate or model variant)."""


class BackendFailed(EdgeError):
    """An inference backend loaded but failed while running."""
