"""The router's error type: OpenAI-style error responses, one exception type carrying the status.

It is the one enginesim answers with too, so it lives in shared code (flotilla.openaihttp); router
modules import it from here.
"""

from __future__ import annotations

from flotilla.openaihttp import ApiError

__all__ = ["ApiError"]
