"""Helpers for tests whose outcome depends on where the wall clock stands."""

from __future__ import annotations

import time


def within_one_window(window_seconds: float = 60.0, seconds_needed: float = 10.0) -> None:
    """Wait, if need be, until the current fixed window has `seconds_needed` left.

    Limits counted per fixed window (rate limits per calendar minute, proxy/admission.py; the
    sign-in limits per 10 minutes) start again when the window turns: a test that sends N
    requests under a limit of N and expects the next one refused would see it admitted. Call
    this right before the first of them.
    """
    left = window_seconds - time.time() % window_seconds
    if left < seconds_needed:
        time.sleep(left + 0.05)
