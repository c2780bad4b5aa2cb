"""The console in a real browser: Debian's chromium, driven by its chromedriver through
selenium, against a live server on the test database and a real Celery worker.

An operator logs in through the admin's own form, opens the dead letters, ticks two, runs the
replay action, confirms, and sees both processed by the worker while the third stays dead. A
screenshot of the dead-letter view is kept as a test artifact (`var/test-artifacts/`, or the
directory in `AMY_TEST_ARTIFACTS`). Another lands on the home page, sees the verdict and the dead
letters grouped by error on the first screen, and replays a whole group from there.

Nothing is downloaded: the browser and driver are the apt packages `./scripts/test` installs, and
naming both paths keeps selenium-manager from running at all.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.contrib.auth import get_user_model
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from accounts.models import User
from admin_ops.models import AuditRecord
from ingest.models import DailySummary, RawEvent, RawEventState, TerraConnection
from ingest.services.dead_letter import raw_event_dead_letter
from tests.ledger import store
from tests.live import ROOT, CeleryWorker, wait_for
from tests.terra import sample

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
STAFF, PASSWORD = "ops-dana", "a-console-password-for-tests"
GARMIN_TERRA_USER = "b3e4a6c1-52d9-4f8e-a7b0-6c9d1e2f3a45"  # daily, daily_two_days and activity samples
OUR_USER = "user_2pQm9XkL4vN8rT1sYb6WcZ3eHdA"
# Generous bounds for a loaded 2-core machine; they only stop a hung run, nothing is timed.
PAGE_TIMEOUT = 30
PROCESSED_TIMEOUT = 30


def artifacts_dir() -> Path:
    directory = Path(os.environ.get("AMY_TEST_ARTIFACTS") or ROOT / "var" / "test-artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.fail(
            f"{CHROMIUM} and {CHROMEDRIVER} are needed: ./scripts/test installs them "
            "(apt-get install chromium chromium-driver)"
        )
    with tempfile.TemporaryDirectory(prefix="amy-chromium-", ignore_cleanup_errors=True) as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (
            "--headless=new",
            "--no-sandbox",  # we run as root
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",  # the network is closed: no update or sync calls
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--password-store=basic",
            f"--user-data-dir={profile}",
            "--window-size=1600,1000",
        ):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        driver.set_page_load_timeout(PAGE_TIMEOUT)
        try:
            yield driver
        finally:
            driver.quit()


def _dead(sample_name: str) -> RawEvent:
    """A real sample event that died while its Terra user had no connection (and no user)."""
    raw_event = store(sample(sample_name))
    assert raw_event_dead_letter(raw_event_id=raw_event.pk, error="retries_exhausted: no connection")
    raw_event.refresh_from_db()
    assert raw_event.state == RawEventState.DEAD
    return raw_event


def _wait(driver: WebDriver) -> WebDriverWait:
    return WebDriverWait(driver, PAGE_TIMEOUT)


def _row(driver: WebDriver, raw_event: RawEvent) -> WebElement:
    return driver.find_element(By.XPATH, f"//input[@name='_selected_action' and @value='{raw_event.pk}']/ancestor::tr")


def _state_shown(driver: WebDriver, raw_event: RawEvent) -> str:
    return _row(driver, raw_event).find_element(By.CSS_SELECTOR, "td.field-state").text.strip().lower()


def test_an_operator_replays_two_fixed_dead_letters_from_the_browser_and_sees_them_processed(
    live_server: Any, live_worker: CeleryWorker, redis_client: redis.Redis, browser: WebDriver
) -> None:
    # given: three events that died because their Terra user had no connection
    daily, activity, left_alone = _dead("daily"), _dead("activity"), _dead("daily_two_days")
    # and the cause is fixed for all three: the user and the connection now exist, so only the
    # selection keeps the third one dead
    user = User.objects.create(id=OUR_USER)
    TerraConnection.objects.create(user=user, terra_user_id=GARMIN_TERRA_USER, provider="GARMIN")
    get_user_model().objects.create_superuser(STAFF, "dana@example.com", PASSWORD)

    # when: the operator logs in through the admin's form
    browser.get(f"{live_server.url}/console/")
    _wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "id_username")))
    browser.find_element(By.ID, "id_username").send_keys(STAFF)
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    # and opens the dead letters: raw events, then the "dead" state filter
    _wait(browser).until(expected_conditions.element_to_be_clickable((By.LINK_TEXT, "Raw events"))).click()
    _wait(browser).until(
        expected_conditions.element_to_be_clickable((By.XPATH, "//details[@data-filter-title='state']//a[.='Dead']"))
    ).click()
    _wait(browser).until(
        expected_conditions.presence_of_element_located(
            (By.XPATH, "//details[@data-filter-title='state']//li[@class='selected']/a[.='Dead']")
        )
    )

    # then: the dead-letter view lists the three, styled (the admin's static files are served)
    assert {_state_shown(browser, row) for row in (daily, activity, left_alone)} == {"dead"}
    header_background = browser.execute_script(
        "return getComputedStyle(document.getElementById('header')).backgroundColor"
    )
    assert header_background not in ("", "rgba(0, 0, 0, 0)", "transparent"), "the admin's CSS did not load"
    # and it says how many there are without counting the table, and offers no counting link
    assert "3 raw events" in browser.find_element(By.CSS_SELECTOR, "#changelist .paginator").text.splitlines()
    assert not browser.find_elements(By.PARTIAL_LINK_TEXT, "Show counts")
    screenshot = artifacts_dir() / "console-dead-letters.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000

    # when: two are ticked and replayed, and the confirmation is accepted
    for row in (daily, activity):
        _row(browser, row).find_element(By.NAME, "_selected_action").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("replay")
    browser.find_element(By.CSS_SELECTOR, ".actions button[name=index]").click()
    confirm = _wait(browser).until(
        expected_conditions.element_to_be_clickable(
            (By.CSS_SELECTOR, "#content input[type=submit][value='Yes, replay']")
        )
    )
    page = browser.find_element(By.ID, "content").text
    assert "Replay 2 raw events?" in page
    assert str(left_alone.pk) not in {cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#content td")}
    confirm.click()
    message = _wait(browser).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist")))
    assert "Replayed 2 of 2 raw events" in message.text

    # then: the worker processes both (the database is the truth; the bound only stops a hang)
    wait_for(
        lambda: (
            set(RawEvent.objects.filter(pk__in=[daily.pk, activity.pk]).values_list("state", flat=True))
            == {RawEventState.PROCESSED}
        ),
        PROCESSED_TIMEOUT,
        "the two replayed events to be processed",
        interval=0.2,
    )
    # and the console shows them processed, the unselected one still dead
    browser.get(f"{live_server.url}/console/ingest/rawevent/")
    _wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "result_list")))
    assert _state_shown(browser, daily) == "processed"
    assert _state_shown(browser, activity) == "processed"
    assert _state_shown(browser, left_alone) == "dead"
    for row in (daily, activity):
        row.refresh_from_db()
        assert (row.replay_count, row.last_replayed_by, row.process_error) == (1, STAFF, None)
    left_alone.refresh_from_db()
    assert (left_alone.state, left_alone.replay_count) == (RawEventState.DEAD, 0)
    assert DailySummary.objects.filter(user=user, raw_event=daily).exists()


def _sign_in(browser: WebDriver, live_server: Any) -> None:
    get_user_model().objects.create_superuser(STAFF, "dana@example.com", PASSWORD)
    browser.get(f"{live_server.url}/console/")
    _wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "id_username")))
    browser.find_element(By.ID, "id_username").send_keys(STAFF)
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    _wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "pipeline-verdict")))


def _within_first_screen(browser: WebDriver, element: WebElement) -> bool:
    bottom = browser.execute_script("return arguments[0].getBoundingClientRect().bottom", element)
    return bottom <= browser.execute_script("return window.innerHeight")


def test_an_operator_sees_what_died_of_what_on_one_screen_and_replays_a_whole_group(
    live_server: Any, live_worker: CeleryWorker, redis_client: redis.Redis, browser: WebDriver
) -> None:
    # given: two events that died of the same missing connection (their errors name different
    # rows), one of something else; the connection now exists
    daily, activity = _dead("daily"), _dead("activity")
    RawEvent.objects.filter(pk=daily.pk).update(process_error=f"retries_exhausted: no connection (row {daily.pk})")
    RawEvent.objects.filter(pk=activity.pk).update(
        process_error=f"retries_exhausted: no connection (row {activity.pk})"
    )
    other = _dead("daily_two_days")
    RawEvent.objects.filter(pk=other.pk).update(process_error="bad_data: data[0].metadata.start_time is missing")
    user = User.objects.create(id=OUR_USER)
    TerraConnection.objects.create(user=user, terra_user_id=GARMIN_TERRA_USER, provider="GARMIN")

    # when: the operator signs in and lands on the console's home
    _sign_in(browser, live_server)

    # then: the verdict and the dead letters grouped by error are on the first screen
    assert browser.save_screenshot(str(artifacts_dir() / "console-home.png"))
    verdict = browser.find_element(By.ID, "pipeline-verdict")
    groups = browser.find_element(By.ID, "dead-letter-groups")
    assert _within_first_screen(browser, verdict)
    assert _within_first_screen(browser, groups)
    rows = [row.text for row in groups.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert rows[0].startswith("2 retries_exhausted: no connection (row <n>)")
    assert rows[1].startswith("1 bad_data: data[<n>].metadata.start_time is missing")
    assert browser.find_element(By.ID, "figure-dead").text.splitlines()[1] == "3"

    # when: the operator triages the biggest group and replays it, confirming
    groups.find_elements(By.LINK_TEXT, "triage")[0].click()
    _wait(browser).until(expected_conditions.element_to_be_clickable((By.ID, "group-replay"))).click()
    _wait(browser).until(
        expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, "#content input[type=submit]"))
    ).click()
    message = _wait(browser).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist")))
    assert "Replayed 2 of 2 dead events" in message.text

    # then: the worker processes the group; the other error's event stays dead
    wait_for(
        lambda: (
            set(RawEvent.objects.filter(pk__in=[daily.pk, activity.pk]).values_list("state", flat=True))
            == {RawEventState.PROCESSED}
        ),
        PROCESSED_TIMEOUT,
        "the replayed group to be processed",
        interval=0.2,
    )
    assert RawEvent.objects.get(pk=other.pk).state == RawEventState.DEAD
    assert AuditRecord.objects.get(action="raw_events_replay").actor == STAFF
