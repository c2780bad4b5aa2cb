"""The API's default permission: an authenticated caller whose account is not being erased."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request

from accounts.authentication import TokenInfo

if TYPE_CHECKING:  # rest_framework.views imports this module through DEFAULT_PERMISSION_CLASSES
    from rest_framework.views import APIView


class ActiveAccount(IsAuthenticated):
    """IsAuthenticated, and refuses (401) a token issued before its account's erasure was asked
    for, except for the methods a view lists in `allow_during_erasure` (DELETE /v1/me, so a
    client may repeat its request while the erasure runs)."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not super().has_permission(request, view):
            return False
        info = request.auth
        if (
            isinstance(info, TokenInfo)
            and info.erasure_pending
            and request.method not in getattr(view, "allow_during_erasure", ())
        ):
            raise AuthenticationFailed("This account is being erased.")
        return True
