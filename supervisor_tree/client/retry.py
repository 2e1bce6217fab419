"""Retry policies for calls, as tenacity objects.

Owns the translation of a `spec.RetryPolicy` (from config or code) into tenacity's
`Retrying`.  Only failures that a new attempt can cure are retried: the callee
exited before replying, or the call timed out.  An error the handler raised is the
worker's answer and is never retried (retrying it would crash the worker again).

    >>> from supervisor_tree.spec import RetryPolicy
    >>> r = retrying(RetryPolicy(attempts=3, wait="fixed", initial=0.01))
    >>> r.stop.max_attempt_number
    3
"""

from __future__ import annotations

import tenacity

from supervisor_tree.spec import RetryPolicy


def wait_strategy(policy: RetryPolicy) -> tenacity.wait.wait_base:
    if policy.wait == "fixed":
        base: tenacity.wait.wait_base = tenacity.wait_fixed(policy.initial)
    else:
        base = tenacity.wait_exponential(multiplier=policy.initial, max=policy.max)
    if policy.jitter:
        return base + tenacity.wait_random(0, policy.initial)
    return base


def retrying(policy: RetryPolicy) -> tenacity.Retrying:
    from supervisor_tree.client.errors import CalleeExited, CallTimeout

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=wait_strategy(policy),
        retry=tenacity.retry_if_exception_type((CalleeExited, CallTimeout)),
        reraise=True,
    )
