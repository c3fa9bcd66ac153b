"""Azure's errors as one line each: what failed, the service's own words (first line), and what to do about it."""

from __future__ import annotations

import contextlib
from typing import Iterator

from pong_train.errors import ServiceError, UsageError

SIGN_IN = ("sign in with `az login` (a service principal: set AZURE_CLIENT_ID, AZURE_TENANT_ID and "
           "AZURE_CLIENT_SECRET), then run this again")
JOB_ACTIONS = ("job ", "following job ", "cancelling job ", "downloading job ")
"""How `doing` begins where the request names a job, whose name may be what is wrong."""
STATUS_RETRIES = 3
"""How often azure-core's retry policy repeats a throttled (429) or failing (5xx) request, after the service's
Retry-After, before the error reaches us; it sends the MLClient's requests with its defaults."""


@contextlib.contextmanager
def azure_errors(doing: str) -> Iterator[None]:
    """Turn an Azure error raised inside into a ServiceError (or, for a name the service refuses, a UsageError) of
    one line, "`doing`: what happened (the service's words); what to do"; anything else goes through unchanged."""
    try:
        yield
    except (UsageError, ServiceError):
        raise
    except Exception as err:
        explained = explain(err, doing)
        if explained is None:
            raise
        raise explained from err


def explain(err: Exception, doing: str) -> Exception | None:
    """The one-line error for an exception of the Azure SDKs, or None for one that is not Azure's."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if is_missing_credential(err):
        return ServiceError(f"{doing}: no Azure credentials ({first_line(err)}); {SIGN_IN}")
    if isinstance(err, (ServiceRequestError, ServiceResponseError)):
        return ServiceError(f"{doing}: cannot reach Azure ({first_line(err)}); check the network connection "
                            "(and HTTPS_PROXY where a proxy is needed), then run this again")
    if isinstance(err, HttpResponseError):
        return ServiceError(f"{doing}: {refusal(err, about_a_job=doing.startswith(JOB_ACTIONS))}")
    from azure.ai.ml.exceptions import MlException

    if isinstance(err, MlException):  # the SDK's own checks, made before any request
        return ServiceError(f"{doing}: {first_line(err)}")
    return None


def is_missing_credential(err: Exception) -> bool:
    """No way to sign in at all (no `az login`, no environment credentials), as opposed to a refused sign-in."""
    from azure.core.exceptions import ClientAuthenticationError

    try:
        from azure.identity import CredentialUnavailableError
    except ImportError:  # azure-identity is part of the extra; without it no credential was ever tried
        return False
    return isinstance(err, CredentialUnavailableError) or (
        isinstance(err, ClientAuthenticationError) and getattr(err, "status_code", None) is None)


def refusal(err: Exception, about_a_job: bool = False) -> str:
    """What the service answered, by status: its code and message, and the fix for that kind of refusal."""
    status = getattr(err, "status_code", None)
    code, message = service_words(err)
    said = f"{message} ({status} {code})".strip() if code else f"{message} ({status})"
    if "quota" in f"{code} {message}".lower():
        return (f"over the subscription's quota: {said}; ask for more in the Azure portal (Quotas), or ask for fewer "
                "nodes (--instance-count) or a smaller --vm-size")
    if status == 401:
        return f"Azure did not accept the sign-in: {said}; {SIGN_IN}"
    if status == 403:
        return (f"not allowed: {said}; your identity needs a role on the workspace that allows this (AzureML Data "
                "Scientist to submit and follow jobs, Contributor to create compute), given by its owner")
    if status == 404:
        workspace = "the workspace (--subscription, --resource-group and --workspace, or the config.json)"
        return f"not found: {said}; check the job's name, and {workspace}" if about_a_job else \
            f"not found: {said}; check {workspace}"
    if status == 429:
        return (f"Azure ML is throttling requests: {said}, still after {STATUS_RETRIES} retries at its Retry-After; "
                "wait a few minutes, then run this again")
    if status is not None and status >= 500:
        return f"Azure ML failed: {said}, still after {STATUS_RETRIES} retries; run this again later"
    return f"Azure ML refused it: {said}"


def service_words(err: Exception) -> tuple[str, str]:
    """The error code and the first line of the message of the service's reply (ARM's {"error": {...}})."""
    detail = getattr(err, "error", None)
    code = getattr(detail, "code", None) or ""
    message = getattr(detail, "message", None) or getattr(err, "message", None) or str(err)
    line = first_line(message)
    if code and line.startswith(f"({code}) "):
        line = line[len(code) + 3:]
    return code, line


def first_line(err: object) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
