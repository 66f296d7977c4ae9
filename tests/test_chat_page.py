"""The chat page at GET /, in a real headless Chromium (selenium) against a real `python serve.py`:
type a message, press Enter, watch the streamed reply arrive; the API key field when --api_key is
set; the new-conversation button; a text model continues the text. In CI it must run (.ci/run
installs Debian's chromium and chromium-driver); elsewhere it is skipped, saying why, without them."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, run_command, tiny_run_args
from test_serve import PAIRS, Server

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"):
    pytest.skip("no chromium/chromedriver here (apt-get install -y chromium chromium-driver); CI installs them",
                allow_module_level=True)
if not os.environ.get("CI"):
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -r requirements-dev.txt)")
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

SCREENSHOTS = os.environ.get("CHAT_PAGE_SCREENSHOTS")  # a folder: keep pictures of the page to look at


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("page")
    pairs = folder / "me.jsonl"
    pairs.write_text("".join(json.dumps({"input": a, "output": b}) + "\n" for a, b in PAIRS))
    out = folder / "me.pt"
    result = run_command("gpt_final_version.py", *tiny_run_args(pairs, out, max_iters=60, block_size=32))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,700"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def wait_for(browser, condition, seconds=60):
    return WebDriverWait(browser, seconds).until(lambda _: condition())


def send_and_wait(browser, text: str) -> str:
    """Type `text`, press Enter, wait until the reply has streamed in; the reply bubble's text."""
    replies_before = len(browser.find_elements(By.CSS_SELECTOR, ".message.assistant"))
    box = browser.find_element(By.ID, "input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)
    wait_for(browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, ".message.assistant")) > replies_before)
    wait_for(browser, lambda: browser.find_element(By.ID, "send").text == "Send")  # Stop while it streams
    return browser.find_elements(By.CSS_SELECTOR, ".message.assistant")[-1].get_attribute("textContent")


def screenshot(browser, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(SCREENSHOTS) / f"{name}.png"))


def test_a_conversation_in_the_page_with_an_api_key(chat_model, browser):
    server = Server(chat_model, "--api_key=s3cret")
    try:
        browser.get(server.url + "/")
        key_row = browser.find_element(By.ID, "key-row")
        wait_for(browser, key_row.is_displayed)  # /health said 401: the page asks for the key
        browser.find_element(By.ID, "api-key").send_keys("s3cret" + Keys.ENTER)
        wait_for(browser, lambda: browser.find_element(By.ID, "model-name").text == "me")
        assert not key_row.is_displayed() and "answers your messages" in browser.find_element(By.ID, "model-kind").text
        send_and_wait(browser, "what time?")
        send_and_wait(browser, "Lunch tomorrow? ☃")
        users = [m.text for m in browser.find_elements(By.CSS_SELECTOR, ".message.user")]
        assert users == ["what time?", "Lunch tomorrow? ☃"]
        notes = [n.text for n in browser.find_elements(By.CSS_SELECTOR, ".note")]
        assert notes == ["read L as l; left out ☃ (the model never saw them)"]
        assert not browser.find_elements(By.CSS_SELECTOR, ".message.error")
        screenshot(browser, "chat")
        browser.find_element(By.ID, "new-conversation").click()
        assert not browser.find_elements(By.CSS_SELECTOR, ".message")
        assert "new conversation" in browser.find_element(By.ID, "messages").text.lower()
    finally:
        log = server.stop()
    assert log.count("POST /v1/chat/completions 200") == 2  # the page uses the OpenAI endpoint, as any client


def test_a_text_model_continues_the_text_in_the_page(browser):
    server = Server(ROOT / "models/shakespeare_char.pt")
    try:
        browser.get(server.url + "/")
        wait_for(browser, lambda: browser.find_element(By.ID, "model-name").text == "shakespeare_char")
        assert not browser.find_element(By.ID, "key-row").is_displayed()
        max_tokens = browser.find_element(By.ID, "max-tokens")
        max_tokens.clear()
        max_tokens.send_keys("60")
        reply = send_and_wait(browser, "ROMEO:")
        assert reply.startswith("ROMEO:") and len(reply) == len("ROMEO:") + 60  # the prompt, then 60 characters
        screenshot(browser, "text")
    finally:
        server.stop()
