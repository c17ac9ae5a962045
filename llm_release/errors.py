"""Every error the core raises, in one place.

Operators turn these into failed task instances; the CLI prints them without a traceback.
A message always names what was wrong and how to fix it, because the person reading it is
often an on-call engineer who did not write the spec.
"""

from __future__ import annotations


class LLMReleaseError(Exception):
    """Base class of every error raised by llm_release."""


class SpecError(LLMReleaseError, ValueError):
    """A user-supplied spec or parameter is invalid. Raised before any side effect."""

    def __init__(self, field: str, problem: str, fix: str | None = None):
        self.field = field
        self.problem = problem
        self.fix = fix
        message = f"{field}: {problem}"
        if fix:
            message += f"; {fix}"
        super().__init__(message)


class ChecksumMismatch(LLMReleaseError):
    """A file's sha256 differs from the one its manifest records."""


class StackError(LLMReleaseError):
    """The local stack could not be started, reached or stopped."""


class StackAlreadyRunning(StackError):
    """`stack up` was asked for a stack that is already running."""


class TritonError(LLMReleaseError):
    """Triton refused a request or did not reach the expected state in time."""


class RoutingError(LLMReleaseError):
    """The gateway refused a routing change or did not apply it."""


class MetricsError(LLMReleaseError):
    """Prometheus could not be queried."""


class ArtifactError(LLMReleaseError):
    """An artifact store refused or failed a request."""


class ArtifactImmutable(ArtifactError):
    """A published model version exists with other bytes: versions are never overwritten."""


class ArtifactNotFound(ArtifactError):
    """The requested artifact does not exist (or is not completely published)."""


class ArtifactAuthError(ArtifactError):
    """The store rejected our credentials (HTTP 401/403): retrying will not help."""
