"""Signals the core sends to the apps that keep data of their own, so the core never imports them."""

from __future__ import annotations

from django.dispatch import Signal

# Sent inside an account erasure's transaction (ingest/services/erasure.py): each receiver deletes
# what it keeps about the user and returns how many rows went. Keyword arguments: `user_id`,
# `terra_user_ids` (the user's Terra users) and `raw_event_ids` (the user's ledger rows).
user_erased = Signal()
