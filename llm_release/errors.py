"""Every error the core raises, in one place.

Operators turn these into failed task instances; the CLI prints them without a traceback.
A message always names what was wrong and how to fix it, because the person reading it is
often an on-call engineer who did not write the spec.

Every error also says whether it is permanent: the same call with the same inputs cannot
succeed later (a bad spec, a model or version that does not exist, refused credentials, an
immutable conflict). An orchestrator fails those at once; everything else (a server that is
down, a 5xx, a timeout) is worth retrying with backoff. `is_permanent` applies that rule to any
exception, ours or a client library's, so every caller decides the same way.
"""

from __future__ import annotations


class LLMReleaseError(Exception):
    """Base class of every error raised by llm_release.

    `permanent` is the class's default; a raise site that knows better passes `permanent=`.
    """

    permanent: bool = False

    def __init__(self, *args, permanent: bool | None = None):
        super().__init__(*args)
        if permanent is not None:
            self.permanent = permanent


class SpecError(LLMReleaseError, ValueError):
    """A user-supplied spec or parameter is invalid. Raised before any side effect."""

    permanent = True

    def __init__(self, field: str, problem: str, fix: str | None = None):
        self.field = field
        self.problem = problem
        self.fix = fix
        message = f"{field}: {problem}"
        if fix:
            message += f"; {fix}"
        super().__init__(message)


class ProvenanceMismatch(SpecError):
    """An engine built for another runtime (Triton image tag, TensorRT-LLM version, GPU
    architecture) than the one asked to serve it. TensorRT engines do not deserialize anywhere
    else, so retrying cannot help: rebuild the engine or serve it where it was built for.
    Raised before anything is installed or loaded. `engine` and `runtime` hold both values."""

    permanent = True

    def __init__(self, field: str, problem: str, fix: str | None = None, *, engine=None, runtime=None):
        self.engine = engine
        self.runtime = runtime
        super().__init__(field, problem, fix)


class ChecksumMismatch(LLMReleaseError):
    """A file's sha256 differs from the one its manifest records."""


class StackError(LLMReleaseError):
    """The local stack could not be started, reached or stopped."""


class StackAlreadyRunning(StackError):
    """`stack up` was asked for a stack that is already running."""


class TritonError(LLMReleaseError):
    """Triton refused a request or did not reach the expected state in time."""


class ModelNotFound(TritonError):
    """The model or version is not in the model repository: install it first; retrying will not help."""

    permanent = True


class RoutingError(LLMReleaseError):
    """The gateway refused a routing change or did not apply it."""


class MetricsError(LLMReleaseError):
    """Prometheus could not be queried."""


class ArtifactError(LLMReleaseError):
    """An artifact store refused or failed a request."""


class ArtifactImmutable(ArtifactError):
    """A published model version exists with other bytes: versions are never overwritten."""

    permanent = True


class ArtifactNotFound(ArtifactError):
    """The requested artifact does not exist (or is not completely published)."""

    permanent = True


class ArtifactAuthError(ArtifactError):
    """The store rejected our credentials (HTTP 401/403): retrying will not help."""

    permanent = True


# HTTP answers that say "your request is wrong" (retrying the same request cannot help), as
# opposed to 408 Request Timeout, 409 Conflict (optimistic concurrency: read again and retry),
# 425 Too Early, 429 Too Many Requests and every 5xx.
_RETRYABLE_4XX = frozenset({408, 409, 425, 429})
# Client-library exceptions that mean missing or unusable configuration, matched by name so
# this module imports no client library.
_PERMANENT_BY_NAME = frozenset({"NoCredentialsError", "PartialCredentialsError", "NoRegionError",
                                "ParamValidationError", "InvalidSchema", "MissingSchema", "InvalidURL"})


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status a client exception carries: requests' HTTPError, botocore's ClientError,
    the Kubernetes client's ApiException."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status if isinstance(status, int) else None
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def is_permanent(exc: BaseException) -> bool:
    """True when retrying the call that raised `exc` cannot succeed: fail at once instead.

    Our errors say so themselves. A client library's HTTP error is permanent for a 4xx other
    than 408/409/425/429; missing credentials or a malformed URL are permanent; connection
    errors, timeouts, 5xx and anything unknown are not (retry with backoff).
    """
    if isinstance(exc, LLMReleaseError):
        return exc.permanent
    if type(exc).__name__ in _PERMANENT_BY_NAME:
        return True
    status = _http_status(exc)
    return status is not None and 400 <= status < 500 and status not in _RETRYABLE_4XX
