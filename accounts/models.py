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


class CliToken(models.Model):
    """A CLI token we minted, by its `jti`: revoking it refuses the token from then on."""

    jti = models.CharField(primary_key=True, max_length=64)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="cli_tokens")
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "cli_tokens"

    def __str__(self) -> str:
        return f"CLI token of {self.user_id} ({'revoked' if self.revoked_at else 'active'})"


class DeviceLogin(models.Model):
    """One CLI login by device flow (SPEC §5). Both codes are stored as SHA-256 hex digests only:
    the device code is a bearer secret until it is exchanged, and the user code approves it."""

    device_code_hash = models.CharField(max_length=64, unique=True)
    user_code_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    approved_by = models.ForeignKey(User, on_delete=models.CASCADE, null=True, blank=True, related_name="device_logins")
    approved_at = models.DateTimeField(null=True, blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    consumed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "device_logins"

    def __str__(self) -> str:
        state = "consumed" if self.consumed_at else "approved" if self.approved_at else "pending"
        return f"Device login {self.pk} ({state})"
