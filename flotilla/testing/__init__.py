"""Helpers shared by the test suites (tests/ and e2e/), importable because they ship in the package."""

from __future__ import annotations

import os


def in_ci() -> bool:
    """CI sets CI=true: then what a test needs is installed or built, never skipped."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
