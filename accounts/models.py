from __future__ import annotations

from django.db import models


class User(models.Model):
    """An API user. The id is the identity provider's subject (Clerk's `sub`); not a Django auth user."""

    id = models.CharField(primary_key=True, max_length=255)
    email = models.EmailField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set by DELETE /v1/me: tokens issued up to then are refused (but for repeating the DELETE)
    # while the erasure runs; the row is deleted when it is done.
    erasure_requested_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "users"

    # DRF treats the authenticated principal as a user object: API users are always authenticated.
    is_authenticated = True
    is_anonymous = False

    def __str__(self) -> str:
        return self.id


class CliToken(models.Model):
    """A CLI token we minted, by its `jti`: revoking it refuses the token from then on. Its owner
    sees it in GET /v1/auth/tokens by the jti (not a secret: it proves nothing without the token's
    signature), with the client that asked for it and when it was last used."""

    jti = models.CharField(primary_key=True, max_length=64)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="cli_tokens")
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Written at most once a minute per token (accounts/tokens.py): a busy CLI costs one write a minute.
    last_used_at = models.DateTimeField(null=True, blank=True)
    client_name = models.CharField(max_length=64, default="", blank=True)
    client_version = models.CharField(max_length=64, default="", blank=True)

    class Meta:
        db_table = "cli_tokens"

    def __str__(self) -> str:
        return f"CLI token of {self.user_id} ({'revoked' if self.revoked_at else 'active'})"


class DeviceLogin(models.Model):
    """One CLI login by device flow. Both codes are stored as SHA-256 hex digests only:
    the device code is a bearer secret until it is exchanged, and the user code approves it."""

    device_code_hash = models.CharField(max_length=64, unique=True)
    user_code_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField()
    # Shown on the approval page, so a person can tell a login they did not start (a phishing
    # link carrying someone else's code): where from, and which client says it asked.
    requested_ip = models.CharField(max_length=64, default="", blank=True)
    client_name = models.CharField(max_length=64, default="", blank=True)
    client_version = models.CharField(max_length=64, default="", blank=True)
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


class UserErasure(models.Model):
    """An account erasure (DELETE /v1/me), kept after the user row is gone.

    Keyed by the subject rather than a foreign key: it must outlive the user, because a token
    issued before the erasure still verifies (Clerk's until it expires) and must not bring the
    account back. A token issued afterwards starts a new, empty account under the same subject.
    """

    user_id = models.CharField(primary_key=True, max_length=255)
    requested_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)
    request_id = models.CharField(max_length=128, default="", blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # What the erasure could not do outside our database (Terra refusing or unreachable after the
    # retries, a stored file that would not delete): [{"step", "target", "error"}]. The database
    # rows are erased regardless; operators follow up from here.
    errors = models.JSONField(default=list, blank=True)

    class Meta:
        db_table = "user_erasures"
        indexes = [
            # Requeueing erasures whose message was lost: the unfinished ones.
            models.Index(
                fields=["requested_at"], name="user_erasures_pending_idx", condition=models.Q(completed_at=None)
            ),
        ]

    def __str__(self) -> str:
        return f"Erasure of {self.user_id} ({'done' if self.completed_at else 'pending'})"


class ErasedTerraUser(models.Model):
    """A Terra user id whose connection an erasure deleted, kept with the erased subject: a late
    webhook may name the erased account by its Terra user id alone (no reference id), and must not
    be kept waiting for a connection with the person's data (ingest/services/erased_users.py)."""

    terra_user_id = models.CharField(primary_key=True, max_length=128)
    user_id = models.CharField(max_length=255)
    erased_at = models.DateTimeField()

    class Meta:
        db_table = "erased_terra_users"

    def __str__(self) -> str:
        return f"Terra user {self.terra_user_id} of erased {self.user_id}"


class IdempotencyKey(models.Model):
    """One `Idempotency-Key` of one user (accounts/idempotency.py): a running request's claim,
    then the answer it gave, until `expires_at`. Kept in PostgreSQL so a Redis outage or flush
    does not let a retry run twice."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="idempotency_keys")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    # Who holds the claim: a request only finishes (or releases) the claim it took, never one a
    # retry took over after its own had lapsed.
    claim = models.UUIDField()
    # Until then the claim stands while no answer is stored; past it the request is presumed dead.
    locked_until = models.DateTimeField()
    status = models.PositiveSmallIntegerField(null=True, blank=True)
    content_type = models.CharField(max_length=255, default="", blank=True)
    content = models.BinaryField(null=True, blank=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        db_table = "idempotency_keys"
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_keys_user_key_uniq")]
        indexes = [models.Index(fields=["expires_at"], name="idempotency_keys_expires_idx")]

    def __str__(self) -> str:
        return f"Idempotency-Key of {self.user_id} ({'answered' if self.status else 'running'})"
