"""How processing can fail, which decides what the worker does next."""

from __future__ import annotations


class BadData(Exception):
    """A payload that can never normalize: dead-lettered at once, no retries."""


class TransientError(Exception):
    """A failure that may heal (network, an upstream 5xx): retried with backoff."""
