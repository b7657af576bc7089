"""Structured logging (Powertools Logger: JSON lines) shared by every function."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger

# One logger per process; child modules log through it so every line is JSON
# with the same service name.  Level from TASKLANE_LOG_LEVEL (default INFO).
logger = Logger(
    service="tasklane",
    level=os.environ.get("TASKLANE_LOG_LEVEL", "INFO"),
)
