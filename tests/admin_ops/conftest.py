from __future__ import annotations

from typing import Any

import pytest

from tests.admin_ops.helpers import ADMIN_KEY, READ_KEY


@pytest.fixture(autouse=True)
def admin_keys(settings: Any) -> None:
    settings.AMY_ADMIN_KEY = ADMIN_KEY
    settings.AMY_ADMIN_READ_KEY = READ_KEY
