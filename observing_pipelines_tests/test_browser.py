"""What operators do in the web UI, in a real headless Chromium (Debian's, driven by Selenium):
with webserver and daemon on Postgres and the stand-ins, find every job with its schedule, open
resolve_taxa's launchpad, launch a re-resolve of one name, see the run succeed, and see the
thumbnails asset's pictures render. Skipped, saying why, where no Chromium can be had
(`.ci/run` installs Debian's `chromium` and `chromium-driver`)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from dagster import DagsterRunStatus

from observing_pipelines.definitions import defs
from observing_pipelines_tests.services import services_on_a_copy, stand_ins, wait_for
from observing_pipelines_tests.support import quiet_schedules

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no Chromium here: apt-get install chromium chromium-driver (.ci/run does)",
)
WAIT = 60


@pytest.fixture
def browser() -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1600,1200")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER or ""), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def shown(browser, css: str, text: str | None = None, seconds: float = WAIT) -> list:
    """The elements matching `css` (containing `text`), once there are any. The UI re-renders
    as its queries answer: an element gone meanwhile is looked for again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def found() -> list:
        try:
            elements = browser.find_elements(By.CSS_SELECTOR, css)
            return [e for e in elements if text is None or text in e.text]
        except StaleElementReferenceException:
            return []

    return wait_for(found, seconds, f"{css} {text or ''} on {browser.current_url}")


def click(browser, css: str, text: str) -> None:
    """Click the one enabled element matching `css` and `text`, found afresh if it re-rendered."""
    from selenium.common.exceptions import StaleElementReferenceException

    def clicked() -> bool:
        try:
            (element,) = shown(browser, css, text)
            if not element.is_enabled():
                return False
            element.click()
            return True
        except StaleElementReferenceException:
            return False

    wait_for(clicked, WAIT, f"{css} {text} to click")


def test_an_operator_finds_the_jobs_launches_a_re_resolve_and_sees_the_pictures(
    tmp_path, server_url, template_database, browser
):
    jobs = {job.name for job in defs.get_repository_def().get_all_jobs()} - {"__ASSET_JOB"}
    assert len(jobs) == 6
    repository = defs.get_repository_def()
    automation = {s.name for s in repository.schedule_defs} | {
        s.name for s in repository.sensor_defs
    }
    with (
        stand_ins() as apis,
        services_on_a_copy(
            tmp_path, server_url, template_database, apis.env() | quiet_schedules(), isolate=False
        ) as services,
    ):
        ui = f"http://127.0.0.1:{services.port}"
        try:
            # Every job on the jobs page; every schedule and sensor, by its job, on Automation.
            browser.get(f"{ui}/jobs")
            click(browser, "button", "Skip")  # Dagster's newsletter dialog, once
            seen = {"a (job)": sum(len(shown(browser, "a", job)) > 0 for job in sorted(jobs))}
            browser.get(f"{ui}/automation")
            seen["a (schedule or sensor)"] = sum(
                len(shown(browser, "a", name)) > 0 for name in sorted(automation)
            )

            # resolve_taxa's launchpad: a re-resolve of one name, launched from the UI.
            browser.get(f"{ui}/locations/observing_pipelines/jobs/resolve_taxa/playground")
            shown(browser, ".CodeMirror")
            browser.execute_script(
                "document.querySelector('.CodeMirror').CodeMirror.setValue(arguments[0])",
                "ops:\n  ingester__identification_taxa:\n    config:\n"
                "      names: [Helianthus annuus]\n",
            )
            click(browser, "button", "Launch Run")  # enabled once the config is valid
            wait_for(lambda: "/runs/" in browser.current_url, WAIT, "the run's page")
            run_id = browser.current_url.split("/runs/")[1].split("?")[0]
            assert services.finish(run_id) == DagsterRunStatus.SUCCESS
            browser.refresh()
            shown(browser, "body", "Success")
            selection = services.query(  # the whole job: the stamps and the view after them
                "SELECT value FROM dagster.run_tags WHERE run_id = %s "
                "AND key = 'dagster/step_selection'",
                (run_id,),
            )
            assert selection == []
            stamped = services.query(
                "SELECT count(*) FROM ingester.community_ids WHERE accepted_taxon_key = 9206251"
            )
            assert stamped == [(1,)]

            # thumbnails' pictures on its asset page, after a run of it.
            thumbnails = services.client.submit_job_execution("thumbnails")
            assert services.finish(thumbnails) == DagsterRunStatus.SUCCESS
            browser.get(f"{ui}/assets/pipelines/taxon_images")
            pictures = shown(browser, "img[src*='upload.wikimedia.org']")
            assert any("120px-Sunflower.jpg" in p.get_attribute("src") for p in pictures)
            shown(browser, "body", "CC BY-SA 4.0")
            seen["img[src*='upload.wikimedia.org']"] = len(pictures)
            print(f"the browser saw: {seen}; run {run_id} SUCCESS")
        except BaseException:
            (tmp_path / "page.html").write_text(browser.page_source)
            browser.save_screenshot(str(tmp_path / "page.png"))
            raise
