"""Azure's errors as one line each: what failed, the service's own words (first line), and what to do about it."""

from __future__ import annotations

import contextlib
import re
from typing import Iterator, Optional

from pong_train.errors import ServiceError, UsageError

SIGN_IN = ("sign in with `az login` (a service principal: set AZURE_CLIENT_ID, AZURE_TENANT_ID and "
           "AZURE_CLIENT_SECRET), then run this again")
JOB_ACTIONS = ("job ", "following job ", "cancelling job ", "downloading job ")
"""How `doing` begins where the request names a job, whose name may be what is wrong."""
EXPIRED_SIGN_IN = re.compile(r"AADSTS(700082|50173|70043|50133)\b|refresh token has expired|expired due to inactivity",
                             re.IGNORECASE)
"""What Azure AD says, through `az account get-access-token`, of a CLI sign-in too old to renew."""
KEY_ACCESS_DISABLED = "KeyBasedAuthenticationNotPermitted"
"""Azure Storage's error code for a request signed with the account key (or a SAS made from it) to an account that
allows no shared-key access; azure-ai-ml turns it into a plain Exception while uploading the code."""
NO_KEY_ACCESS = (
    "the workspace's storage account does not allow shared-key access (KeyBasedAuthenticationNotPermitted), and "
    "Azure ML handed out a key-based SAS token for the upload; give your identity the Storage Blob Data Contributor "
    "role on the storage account and switch the workspace's datastores to identity access (az ml workspace update "
    "--system-datastores-auth-mode identity), or allow shared-key access on the storage account")
ANSI_CODE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
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
        if EXPIRED_SIGN_IN.search(str(err)):
            return ServiceError(f"{doing}: your Azure CLI sign-in has expired ({expiry(err)}); run az login, then "
                                "run this again")
        return ServiceError(f"{doing}: no Azure credentials ({first_line(err)}); {SIGN_IN}")
    if any(KEY_ACCESS_DISABLED in f"{getattr(cause, 'error_code', '')} {cause}" for cause in causes(err)):
        return ServiceError(f"{doing}: {NO_KEY_ACCESS}")
    if isinstance(err, (ServiceRequestError, ServiceResponseError)):
        return ServiceError(f"{doing}: cannot reach Azure ({first_line(err)}); check the network connection "
                            "(and HTTPS_PROXY where a proxy is needed), then run this again")
    if isinstance(err, HttpResponseError):
        return ServiceError(f"{doing}: {refusal(err, about_a_job=doing.startswith(JOB_ACTIONS))}")
    from azure.ai.ml.exceptions import MlException

    if isinstance(err, MlException):  # the SDK's own checks, made before any request
        return ServiceError(f"{doing}: {first_line(err)}")
    return None


def causes(err: Optional[BaseException]) -> Iterator[BaseException]:
    """`err` and the exceptions it was raised from (or while handling), innermost last."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def expiry(err: Exception) -> str:
    """Azure AD's own words on the expired sign-in: the line of the credential chain's message that holds them."""
    lines = [line.strip() for line in ANSI_CODE.sub("", str(err)).splitlines()]
    said = next((line for line in lines if EXPIRED_SIGN_IN.search(line)), first_line(err))
    return re.split(r"\s+Trace ID:", re.sub(r"^\w+Credential:\s*(ERROR:\s*)?", "", said))[0]


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
    if status == 403 and getattr(err, "error_code", None):  # Azure Storage's refusals carry their code
        return (f"not allowed: {said}; your identity needs the Storage Blob Data Contributor role on the workspace's "
                "storage account to upload the job's files, given by its owner")
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
    code = getattr(detail, "code", None) or getattr(err, "error_code", None) or ""  # Azure Storage's: error_code
    message = getattr(detail, "message", None) or getattr(err, "message", None) or str(err)
    line = first_line(message)
    if code and line.startswith(f"({code}) "):
        line = line[len(code) + 3:]
    return code, line


def first_line(err: object) -> str:
    """The first line of a message that says something: the SDK colours its validation messages and puts a blank,
    coloured banner first, and their own words on a "(x) ..." line (with the field's error on the next, "- ...")."""
    lines = [line.strip() for line in ANSI_CODE.sub("", str(err)).strip().splitlines()]
    lines = [line for line in lines if line]
    detail = next((at for at, line in enumerate(lines) if line.startswith("(x) ")), None)
    if detail is None:
        return lines[0] if lines else type(err).__name__
    said = lines[detail][len("(x) "):]
    field_error = lines[detail + 1] if said.endswith(":") and detail + 1 < len(lines) else ""
    return f"{said} {field_error.lstrip('- ')}".strip()
