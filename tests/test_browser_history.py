"""History as an agent uses it, in Chromium: wrap up, find a call again, its story, its recording."""
import re

import pytest
from playwright.sync_api import expect

from .conftest import PASSWORD, audio_seconds
from .test_browser import call_customer, panel_status, sign_in, start_phone

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("app_config", [{"SANDBOX_TIME_SCALE": 0.3}])
def test_an_agent_wraps_up_finds_a_call_by_part_of_its_number_and_plays_it(app, page, auth, live_server):
    auth.create("alice")
    sign_in(page, live_server, "alice", PASSWORD)
    start_phone(page)
    call_customer(page, "020 7946 0000")  # answers; our phone answers it
    expect(page.locator("#in-call")).to_be_visible(timeout=10_000)
    page.wait_for_timeout(1500)
    page.get_by_role("button", name="Hang up").click()
    expect(panel_status(page)).to_have_attribute("data-status", "completed", timeout=10_000)
    page.get_by_role("link", name="Wrap up this call").click()
    page.get_by_label("Disposition").select_option("callback requested")
    page.get_by_label("Notes").fill("Wants a call back on Friday")
    page.get_by_role("button", name="Save wrap-up").click()
    expect(page.get_by_text("Wrap-up saved.")).to_be_visible()

    page.get_by_role("link", name="Dialer").click()
    call_customer(page, "020 7946 0001")  # busy
    expect(panel_status(page)).to_have_attribute("data-status", "busy", timeout=10_000)

    page.get_by_role("link", name="History").click()
    expect(page.locator("#calls tbody tr")).to_have_count(2)
    page.get_by_label("Number").fill("(020) 7946-0000")  # written another way than it was dialled
    expect(page.locator("#calls tbody tr")).to_have_count(1)
    expect(page).to_have_url(re.compile(r"q=%28020%29"))  # the view is in the URL
    row = page.locator("#calls tbody tr").first
    expect(row).to_contain_text("callback requested")
    row.locator("td.when a").click()

    story = page.locator(".timeline li")
    expect(story.first).to_contain_text("placed")
    texts = story.all_inner_texts()
    order = ["placed", "dialling the customer", "the customer answered", "the agent's phone rang", "the agent answered"]
    assert [next(i for i, t in enumerate(texts) if line in t) for line in order] == sorted(
        next(i for i, t in enumerate(texts) if line in t) for line in order), texts
    expect(page.get_by_label("Notes")).to_have_value("Wants a call back on Friday")
    audio = page.get_by_label("Recording")
    assert audio_seconds(audio) > 0
    seeked = audio.evaluate("""a => new Promise((resolve, reject) => {
        a.addEventListener('seeked', () => resolve(a.currentTime), {once: true});
        a.addEventListener('error', () => reject(a.error && a.error.code), {once: true});
        a.currentTime = Math.min(1, a.duration / 2);
    })""")
    assert seeked > 0
