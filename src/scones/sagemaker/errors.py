"""Errors raised before a request reaches SageMaker, and when a job or endpoint fails."""


class LaunchError(ValueError):
    """A launch was asked for with invalid settings (names, URIs, numbers, files)."""


class ResourceFailedError(RuntimeError):
    """A training job or endpoint ended in a failed state; the message carries the reason."""
