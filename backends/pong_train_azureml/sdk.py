"""The Azure SDKs, imported on demand: one clear message when the azureml extra is missing."""

from __future__ import annotations

import importlib
import logging

from pong_train.errors import UsageError

INSTALL_HINT = "pip install 'pong-train[azureml]' (from a clone: scripts/setup.sh azureml)"


def require_sdk(*modules: str) -> None:
    """Import `modules` or raise a UsageError naming the install command; quiets the SDK's own chatter."""
    # The SDK announces its experimental classes (RayDistribution) on every use, and chats at INFO.
    logging.getLogger("azure.ai.ml._utils._experimental").setLevel(logging.ERROR)
    logging.getLogger("azure").setLevel(logging.WARNING)
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise UsageError(f"the azureml backend needs the Azure SDKs, which are not installed: {INSTALL_HINT}") from None
