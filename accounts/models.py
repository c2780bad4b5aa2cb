from __future__ import annotations

from django.db import models


class User(models.Model):
    """An API user. The id is the identity provider's subject (Clerk's `sub`); not a Django auth user."""

    id = models.CharField(primary_key=True, max_length=255)
    email = models.EmailField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "users"

    # DRF treats the authenticated principal as a user object: API users are always authenticated.
    is_authenticated = True
    is_anonymous = False

    def __str__(self) -> str:
        return self.id
