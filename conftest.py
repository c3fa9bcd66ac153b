"""Imported by pytest before any test folder: MLflow first.

MLflow's import re-configures logging and closes every handler there is. absl's handler (imported with RLlib while
pytest collects) holds pytest's capture stream, which it would close for real, breaking capture for the rest of the
session. Imported first, MLflow finds no such handler.
"""

import contextlib

with contextlib.suppress(ImportError):
    import mlflow  # noqa: F401
