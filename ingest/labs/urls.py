"""The lab endpoints; amy/urls.py includes these, and tests use them on their own."""

from __future__ import annotations

from django.urls import path

from ingest.labs.views import LabDetailApi, LabFileApi, LabsApi, LabUploadApi

urlpatterns = [
    path("v1/labs", LabsApi.as_view()),
    path("v1/labs/upload", LabUploadApi.as_view()),
    path("v1/labs/<int:lab_id>", LabDetailApi.as_view()),
    path("v1/labs/<int:lab_id>/file", LabFileApi.as_view()),
]
