"""A parsed lab report reaches the CLI's mirror: its upload and biomarkers come out of /v1/sync."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from ingest.models import LabUpload
from tests.ingest.test_sync import settle
from tests.ledger import deliver
from tests.terra import sample

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_parsed_lab_report_is_synced_with_its_biomarkers() -> None:
    # given: an upload Terra knows, and its report processed by the worker's service
    user = User.objects.create(id="lab-user")
    lab_upload = LabUpload.objects.create(user=user, filename="bloods.pdf", terra_upload_id="upl_sync_1")
    report = json.loads(sample("lab_report"))
    report["upload_id"] = "upl_sync_1"
    deliver(json.dumps(report).encode())
    settle()
    # when
    client = APIClient()
    client.force_authenticate(user=user)
    response = client.get("/v1/sync", {"tables": "lab_uploads,biomarkers"})
    # then
    assert response.status_code == 200
    body = response.json()
    assert [row["id"] for row in body["tables"]["lab_uploads"]] == [lab_upload.pk]
    assert body["tables"]["lab_uploads"][0]["status"] == "parsed"
    codes = sorted(row["code"] for row in body["tables"]["biomarkers"])
    assert codes == sorted(
        ["hemoglobin", "ldl_cholesterol", "c_reactive_protein_hs", "vitamin_d_25_hydroxy", "nitrite"]
    )
    assert {row["lab_upload_id"] for row in body["tables"]["biomarkers"]} == {lab_upload.pk}
