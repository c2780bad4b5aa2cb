"""A HEIC past the pixel budget (AMY_HEIC_MAX_PIXELS) is refused from its header, never decoded.

Decoding takes memory per pixel while the file stays small, so the budget is what keeps a
conversion inside the worker's memory cap. The upload answers 413 with the budget in the details;
a file stored before the budget was lowered fails in the worker with the same message, before a
pixel is decoded and without reaching Terra.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from accounts.models import User
from ingest.labs.heic import HeicTooLarge, heic_size, heic_to_jpeg
from ingest.models import LabUpload, LabUploadStatus
from ingest.tasks import lab_upload_submit_task
from tests.fake_terra import FakeTerra
from tests.ingest.test_lab_uploads import Api, error_of, lab_report_requests, uploaded

pytestmark = [pytest.mark.django_db, pytest.mark.urls("ingest.labs.urls")]


@pytest.fixture
def api(settings: Any, tmp_path: Path) -> Api:
    """A user's API client, the `uploads` storage on local disk under a fresh directory."""
    settings.STORAGES = {
        **settings.STORAGES,
        "uploads": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}},
    }
    return Api(User.objects.create(id="user_heic_budget"))


@pytest.fixture
def terra(fake_terra: FakeTerra, settings: Any) -> Iterator[FakeTerra]:
    settings.TERRA_API_BASE_URL = fake_terra.url
    settings.TERRA_API_CONFIGURED = True
    settings.TERRA_DEV_ID = "test-dev-id"
    settings.TERRA_API_KEY = "test-api-key"
    fake_terra.reset()
    yield fake_terra
    fake_terra.reset()


def heic(width: int, height: int, *, declared: tuple[int, int] | None = None) -> bytes:
    """A real HEIC; with `declared`, its header (the `ispe` property) claims that size instead,
    as a decompression bomb's would, over the same few hundred bytes."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="HEIF", quality=60)
    content = out.getvalue()
    if declared is None:
        return content
    at = content.index(b"ispe") + 8  # after the box type and its version and flags
    return content[:at] + struct.pack(">II", *declared) + content[at + 8 :]


BOMB = heic(64, 64, declared=(6000, 4000))  # 24 million pixels declared in about 400 bytes


def test_the_dimensions_come_from_the_header() -> None:
    assert heic_size(BOMB) == (6000, 4000)
    assert len(BOMB) < 1000


def test_an_upload_past_the_budget_is_refused_with_413_and_nothing_is_stored(api: Api, settings: Any) -> None:
    settings.AMY_HEIC_MAX_PIXELS = 16_000_000
    response = api.upload(BOMB, name="IMG_0001.HEIC")
    assert response.status_code == 413
    assert error_of(response) == {"code": "payload_too_large", "details": {"field": "file", "max_pixels": 16_000_000}}
    assert response.json()["error"]["message"] == (
        "The image is 6000x4000 pixels; at most 16,000,000 pixels are accepted."
    )
    assert LabUpload.objects.count() == 0


def test_an_upload_at_the_budget_is_accepted(api: Api, settings: Any) -> None:
    settings.AMY_HEIC_MAX_PIXELS = 64 * 48
    assert api.upload(heic(64, 48), name="IMG_0002.HEIC").status_code == 202


def test_the_worker_refuses_a_stored_image_past_the_budget_before_decoding_it(
    api: Api, settings: Any, terra: FakeTerra
) -> None:
    # given: stored while the budget allowed it
    settings.AMY_HEIC_MAX_PIXELS = 100_000_000
    lab_upload = uploaded(api, BOMB, name="IMG_0003.HEIC")
    settings.AMY_HEIC_MAX_PIXELS = 16_000_000
    # when
    assert lab_upload_submit_task(lab_upload.pk) == "failed"
    # then: refused by its declared size (a decode would have failed on the lie, with another message)
    lab_upload.refresh_from_db()
    assert (lab_upload.status, lab_upload.error) == (
        LabUploadStatus.FAILED,
        "The image is 6000x4000 pixels; at most 16,000,000 pixels are accepted.",
    )
    assert lab_report_requests(terra) == []


def test_the_conversion_checks_the_budget_first(settings: Any) -> None:
    settings.AMY_HEIC_MAX_PIXELS = 16_000_000
    with pytest.raises(HeicTooLarge) as refused:
        heic_to_jpeg(BOMB)
    assert (refused.value.width, refused.value.height) == (6000, 4000)
    settings.AMY_HEIC_MAX_PIXELS = 64 * 48
    assert heic_to_jpeg(heic(64, 48))[:3] == b"\xff\xd8\xff"  # a JPEG
