"""Asking for an account's erasure (DELETE /v1/me); ingest carries it out
(ingest/services/erasure.py), since it owns most of what is erased."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Exists
from django.utils import timezone

from accounts.models import ErasedTerraUser, User, UserErasure


def user_erasure_request(*, user: User, request_id: str | None = None) -> UserErasure:
    """Record the erasure (once: asking again returns the same record) and stamp the user, so
    tokens issued until now are refused from the commit on. The caller queues the work."""
    with transaction.atomic():
        locked = User.objects.select_for_update().get(pk=user.pk)
        erasure, created = UserErasure.objects.get_or_create(
            pk=user.pk, defaults={"requested_at": timezone.now(), "request_id": request_id or ""}
        )
        if not created and erasure.completed_at is not None:
            # An earlier erasure finished and the subject signed in again: this is a new one.
            erasure.requested_at, erasure.completed_at = timezone.now(), None
            erasure.request_id, erasure.attempts, erasure.errors = request_id or "", 0, []
            erasure.save()
        if locked.erasure_requested_at is None:
            locked.erasure_requested_at = erasure.requested_at
            locked.save(update_fields=["erasure_requested_at"])
    return erasure


def user_erased(user_id: str) -> bool:
    """Whether `user_id` asked for its account's erasure and has no new account since: the erasure
    is running (the user row still carries its stamp) or done (the row is gone). Then nothing may
    be created for it: a late webhook naming it must not bring the account back."""
    if not user_id:
        return False
    new_account = User.objects.filter(pk=user_id, erasure_requested_at=None)
    return UserErasure.objects.filter(pk=user_id).filter(~Exists(new_account)).exists()


def terra_user_erased(terra_user_id: str) -> bool:
    """Whether this Terra user id was a connection of an erased account that has no new one."""
    if not terra_user_id:
        return False
    owner = ErasedTerraUser.objects.filter(pk=terra_user_id).values_list("user_id", flat=True).first()
    return owner is not None and user_erased(owner)
