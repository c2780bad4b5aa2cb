"""The CLI's account endpoints that report ingest's data (SPEC §5).

`/v1/me` lives here rather than in `accounts` because it lists Terra connections, which ingest
owns: apps depend one way (ingest → accounts), so accounts cannot import them.
"""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User
from ingest.models import TerraConnection


class ConnectionSerializer(serializers.ModelSerializer):
    class Meta:
        model = TerraConnection
        fields = ["id", "terra_user_id", "provider", "status", "connected_at", "last_webhook_at"]


class MeApi(APIView):
    class UserSerializer(serializers.ModelSerializer):
        class Meta:
            model = User
            fields = ["id", "email", "created_at"]

    def get(self, request: Request) -> Response:
        user: User = request.user  # type: ignore[assignment]
        connections = TerraConnection.objects.filter(user=user).order_by("connected_at", "id")
        return Response(
            {
                "user": self.UserSerializer(user).data,
                "connections": ConnectionSerializer(connections, many=True).data,
                "connections_stale": False,
            }
        )
