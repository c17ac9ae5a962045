"""One retry rule for every task of llm-release: permanent errors fail now, transient ones retry.

A missing model, a spec error or refused credentials will fail the same way on every retry, so
retrying them only makes the person waiting on the run wait longer (two retries five minutes
apart turned a one-line mistake into a ten-minute wait). A connection error, a 5xx or a timeout
may pass on a later try, so those retry with exponential backoff. Which is which is decided by
`llm_release.errors.is_permanent`, the core's one rule, which knows our errors and the client
libraries' (HTTP 4xx, missing credentials).

Every operator of this package derives from `ReleaseOperator`, which applies the rule to its
`execute` (and `execute_complete`, for deferrable ones) and sets the retry defaults; TaskFlow
tasks in our DAGs use the `fail_now_if_permanent` decorator.
"""

from __future__ import annotations

import functools
from datetime import timedelta

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

# Transient failures: up to 3 retries, 20 s, 40 s, 80 s apart (never more than 10 minutes).
DEFAULT_RETRIES = 3
DEFAULT_RETRY_DELAY = timedelta(seconds=20)
DEFAULT_BACKOFF = 2.0
DEFAULT_MAX_RETRY_DELAY = timedelta(minutes=10)

WRAPPED_METHODS = ("execute", "execute_complete")


class PermanentTaskError(AirflowFailException):
    """A task failed for a reason no retry can fix; Airflow fails it without retrying."""


def fail_now_if_permanent(fn):
    """Re-raise a permanent error (per `is_permanent`) as Airflow's fail-now exception.

    The original exception stays chained, so the task log shows both the sentence and where it
    came from; transient errors pass through untouched and Airflow retries them.
    """
    if getattr(fn, "_llm_release_fail_fast", False):
        return fn

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AirflowFailException:
            raise
        except Exception as exc:
            from llm_release.errors import is_permanent

            if is_permanent(exc):
                raise PermanentTaskError(f"{exc} (permanent: {type(exc).__name__}, not retried)") from exc
            raise

    wrapper._llm_release_fail_fast = True
    return wrapper


class ReleaseOperator(BaseOperator):
    """Base of every llm-release operator: the retry rule above, applied in one place.

    Subclasses write `execute` as usual; it is wrapped when the class is defined. The retry
    arguments are ordinary BaseOperator arguments, so a DAG's `default_args` or a task's own
    arguments still win over these defaults.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in WRAPPED_METHODS:
            method = cls.__dict__.get(name)
            if method is not None:
                setattr(cls, name, fail_now_if_permanent(method))

    def __init__(self, *, retries: int | None = DEFAULT_RETRIES, retry_delay: timedelta | float = DEFAULT_RETRY_DELAY,
                 retry_exponential_backoff: float = DEFAULT_BACKOFF,
                 max_retry_delay: timedelta | float | None = DEFAULT_MAX_RETRY_DELAY, **kwargs):
        super().__init__(retries=retries, retry_delay=retry_delay, retry_exponential_backoff=retry_exponential_backoff,
                         max_retry_delay=max_retry_delay, **kwargs)
