"""openami's own errors. Third-party errors are translated into these at the adapter edge."""

from __future__ import annotations


class OpenAMIError(Exception):
    """Base of every error openami raises on purpose."""


class ConfigurationError(OpenAMIError):
    """The settings are missing or contradict each other."""


class NotFoundError(OpenAMIError):
    """A referenced object (meter, site, account ...) does not exist."""


class ConflictError(OpenAMIError):
    """The change contradicts what is already stored."""


class ValidationError(OpenAMIError):
    """Input is malformed or out of range. `location` says where (file row and column, field, frame ...)."""

    def __init__(self, message: str, location: str | None = None) -> None:
        self.message = message
        self.location = location
        super().__init__(f"{location}: {message}" if location else message)


class FrameRejected(OpenAMIError):  # noqa: N818  (names the outcome, like the metric label it carries)
    """A frame from a meter was refused. `reason` is a short stable code used as a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")
