"""The report's blind test page (gptlib/blind_test.py) in a real headless Chromium, opened from a
file as the person would open it: pick a reply in each conversation, the page scores it locally and
loads nothing from anywhere. The browser comes as the chat page's tests start it (test_chat_page.py);
without chromium the module is skipped, saying why."""
from __future__ import annotations

import pytest
from test_chat_page import browser, texts, wait_for  # noqa: F401  (browser: the module's one Chromium)

from gptlib.blind_test import blind_page

pytestmark = pytest.mark.slow


def test_the_person_picks_and_the_page_scores_locally(browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By

    examples = [{"context": [("them", f"question {n}?"), ("you", "hmm"), ("them", "so?")],
                 "real": f"mine {n}", "model": f"bot {n}"} for n in range(5)]
    page = tmp_path / "me.blind.html"
    page.write_text(blind_page(examples, seed=7), encoding="utf-8")
    browser.get(page.as_uri())
    wait_for(browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, ".item")) == 5)
    assert browser.find_element(By.ID, "score").text == "answered 0 of 5; you picked your own reply in 0"
    assert texts(browser, ".item:first-child .turn")[0] == "themquestion 0?"
    for n, box in enumerate(browser.find_elements(By.CSS_SELECTOR, ".item")):
        pick = f"mine {n}" if n < 3 else f"bot {n}"  # right three times, wrong twice
        next(b for b in box.find_elements(By.CSS_SELECTOR, ".choice") if b.text == pick).click()
        assert all(not b.is_enabled() for b in box.find_elements(By.CSS_SELECTOR, ".choice"))
    assert texts(browser, ".verdict") == ["yes: that one is yours"] * 3 + ["no: that one is the model's"] * 2
    assert browser.find_element(By.ID, "score").text == \
        "done: you picked your own reply in 3 of 5 (guessing would get about 2.5)"
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0  # nothing fetched
