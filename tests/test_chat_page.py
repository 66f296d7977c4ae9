"""The chat page at GET /, in a real headless Chromium (selenium) against a real `python serve.py`:
type a message, press Enter, watch the streamed reply arrive; the API key field and a wrong key;
the header with the model's (the persona's) name; regenerate, edit an earlier message and go on
from it, copy, stop (Escape and the button), Shift+Enter, the conversation kept across a reload;
a busy server's 503; a text model continues the text. One browser and two servers for the module
(a chat model with an API key, the shipped text model with one reply at a time). In CI it must run
(.ci/run installs Debian's chromium and chromium-driver); elsewhere it is skipped, saying why, without them."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import tempfile
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
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

SCREENSHOTS = os.environ.get("CHAT_PAGE_SCREENSHOTS")  # a folder: keep pictures of the page to look at
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--window-size=1100,700")


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
    profile = tempfile.mkdtemp(prefix="chromium-profile-")  # a fresh profile: no state from another run
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def chat_server(chat_model):
    running = Server(chat_model, "--api_key=s3cret")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def text_server():
    """One reply at a time, and a short wait for it: a second request while one streams gets a 503."""
    running = Server(ROOT / "models/shakespeare_char.pt", "--concurrency=1", "--queue_timeout=0.2", "--max_tokens=4000")
    yield running
    running.stop()


def wait_for(browser, condition, seconds=60):
    return WebDriverWait(browser, seconds).until(lambda _: condition())


def elements(browser, css: str):
    return browser.find_elements(By.CSS_SELECTOR, css)


def texts(browser, css: str) -> list[str]:
    return [e.get_attribute("textContent") for e in elements(browser, css)]


def streaming(browser) -> bool:
    return browser.find_element(By.ID, "send").text == "Stop"


def send_and_wait(browser, text: str) -> str:
    """Type `text`, press Enter, wait until the reply has streamed in; the reply's text."""
    box = browser.find_element(By.ID, "input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)
    wait_for(browser, lambda: not streaming(browser) and texts(browser, ".message.user .text")[-1:] == [text])
    return texts(browser, ".message.assistant .text")[-1]


def open_page(browser, server: Server, key: str = "") -> None:
    """The page, a fresh conversation (the browser keeps one per server across tests)."""
    browser.get(server.url + "/")
    if key:
        wait_for(browser, browser.find_element(By.ID, "key-row").is_displayed)
        browser.find_element(By.ID, "api-key").send_keys(key + Keys.ENTER)
    wait_for(browser, lambda: browser.find_element(By.ID, "model-name").text != "Chat")
    browser.find_element(By.ID, "new-conversation").click()


def served_count(server: Server) -> int:
    """Requests the server has answered (its /health, itself included)."""
    return server.get("/health", {"Authorization": "Bearer s3cret"})[1]["served"]


def screenshot(browser, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(SCREENSHOTS) / f"{name}.png"))


def test_a_conversation_with_an_api_key_and_the_persona_in_the_header(chat_server, browser):
    browser.get(chat_server.url + "/")
    key_row = browser.find_element(By.ID, "key-row")
    wait_for(browser, key_row.is_displayed)  # /health said 401: the page asks for the key
    browser.find_element(By.ID, "api-key").send_keys("wrong" + Keys.ENTER)
    wait_for(browser, lambda: "The API key was not accepted (401)" in "".join(texts(browser, ".message.error")))
    browser.find_element(By.ID, "api-key").clear()
    browser.find_element(By.ID, "api-key").send_keys("s3cret" + Keys.ENTER)
    wait_for(browser, lambda: browser.find_element(By.ID, "model-name").text == "me")
    assert not key_row.is_displayed() and not elements(browser, ".message.error")
    assert browser.find_element(By.ID, "model-kind").text == "answers your messages as me" and browser.title == "me · chat"
    browser.find_element(By.ID, "new-conversation").click()
    send_and_wait(browser, "what time?")
    send_and_wait(browser, "Lunch tomorrow? ☃")
    assert texts(browser, ".message.user .text") == ["what time?", "Lunch tomorrow? ☃"]
    assert texts(browser, ".message.assistant .who") == ["me", "me"]  # each reply says who answers
    assert texts(browser, ".note") == ["read L as l; left out ☃ (the model never saw them)"]
    assert not elements(browser, ".message.error")
    screenshot(browser, "chat")
    browser.find_element(By.ID, "new-conversation").click()
    assert not elements(browser, ".message")
    assert "new conversation" in browser.find_element(By.ID, "messages").text.lower()


def test_regenerate_edit_and_a_reload_that_keeps_the_conversation(chat_server, browser):
    open_page(browser, chat_server)  # the key is kept for the tab (sessionStorage)
    send_and_wait(browser, "what time?")
    send_and_wait(browser, "how was porto")
    assert [e.text for e in elements(browser, ".regenerate")] == ["Regenerate"]  # on the last reply only
    served = served_count(chat_server)
    elements(browser, ".regenerate")[0].click()
    wait_for(browser, lambda: not streaming(browser) and len(elements(browser, ".message.assistant")) == 2)
    looks = iter(range(1, 1000))  # each look at /health is counted once answered: the i-th sees i - 1 of them
    wait_for(browser, lambda: served_count(chat_server) - served - next(looks) == 1)  # one reply asked for again
    assert texts(browser, ".message.user .text") == ["what time?", "how was porto"]

    browser.refresh()  # the conversation is in localStorage: the same messages come back
    wait_for(browser, lambda: texts(browser, ".message.user .text") == ["what time?", "how was porto"])
    kept = texts(browser, ".message .text")
    assert len(kept) == 4

    elements(browser, ".message.user .edit")[0].click()  # edit the first message: what followed it goes
    box = browser.find_element(By.CSS_SELECTOR, ".message.user textarea")
    assert box.get_attribute("value") == "what time?"
    box.clear()
    box.send_keys("lunch tomorrow?" + Keys.ENTER)
    wait_for(browser, lambda: not streaming(browser) and len(elements(browser, ".message.assistant")) == 1)
    assert texts(browser, ".message.user .text") == ["lunch tomorrow?"]
    browser.refresh()
    wait_for(browser, lambda: texts(browser, ".message.user .text") == ["lunch tomorrow?"])
    assert len(elements(browser, ".message.assistant")) == 1


def test_copy_puts_the_message_on_the_clipboard(chat_server, browser):
    open_page(browser, chat_server)
    reply = send_and_wait(browser, "call me later")
    browser.execute_cdp_cmd("Browser.grantPermissions", {"origin": chat_server.url, "permissions": [
        "clipboardReadWrite", "clipboardSanitizedWrite"]})
    elements(browser, ".message.user .copy")[0].click()
    wait_for(browser, lambda: elements(browser, ".message.user .copy")[0].text == "Copied")
    read = "navigator.clipboard.readText().then(arguments[0], (e) => arguments[0]('failed: ' + e))"
    assert browser.execute_async_script(read) == "call me later"
    elements(browser, ".message.assistant .copy")[0].click()
    wait_for(browser, lambda: browser.execute_async_script(read) == reply)


def test_stop_with_escape_and_with_the_button_and_shift_enter_for_a_new_line(text_server, browser):
    open_page(browser, text_server)
    max_tokens = browser.find_element(By.ID, "max-tokens")
    max_tokens.clear()
    max_tokens.send_keys("1000")  # the text model never ends by itself: 1000 characters take seconds
    box = browser.find_element(By.ID, "input")
    box.send_keys("ROMEO:" + Keys.ENTER)
    wait_for(browser, lambda: streaming(browser) and len(texts(browser, ".message.assistant .output")[-1]) > 5)
    box.send_keys(Keys.ESCAPE)
    wait_for(browser, lambda: not streaming(browser))
    stopped = texts(browser, ".message.assistant .output")[-1]
    assert 0 < len(stopped) < 1000 and texts(browser, ".message.assistant .stopped") == ["(stopped)"]
    box.send_keys("JULIET:" + Keys.ENTER)
    wait_for(browser, lambda: streaming(browser) and len(texts(browser, ".message.assistant .output")[-1]) > 5)
    browser.find_element(By.ID, "send").click()  # Stop
    wait_for(browser, lambda: not streaming(browser))
    assert len(texts(browser, ".message.assistant .stopped")) == 2
    assert texts(browser, ".message.assistant .output")[0] == stopped  # the earlier reply is kept as it was
    box.send_keys("a" + Keys.SHIFT + Keys.ENTER + Keys.NULL + "b")
    assert box.get_attribute("value") == "a\nb" and len(elements(browser, ".message.user")) == 2  # nothing sent
    box.clear()


def test_a_busy_server_gets_a_clear_message_and_retry_sends_again(text_server, browser):
    open_page(browser, text_server)
    connection = http.client.HTTPConnection("127.0.0.1", text_server.port, timeout=60)
    connection.request("POST", "/v1/chat/completions", json.dumps(
        {"messages": [{"role": "user", "content": "ROMEO:"}], "max_tokens": 4000, "stream": True}),
        {"Content-Type": "application/json"})
    response = connection.getresponse()  # the one reply slot is taken while this stream is open
    assert response.status == 200
    try:
        box = browser.find_element(By.ID, "input")
        box.send_keys("JULIET:" + Keys.ENTER)
        wait_for(browser, lambda: elements(browser, ".message.error"))
        assert "The server is busy (503)" in elements(browser, ".message.error")[0].text
        assert texts(browser, ".message.user .text") == ["JULIET:"] and not elements(browser, ".message.assistant")
    finally:
        connection.close()  # the stream's reader is gone: its generation stops and the slot is free
    retry = elements(browser, ".regenerate")
    assert [r.text for r in retry] == ["Retry"]
    wait_for(browser, lambda: _retried(browser), seconds=90)
    assert not elements(browser, ".message.error")


def _retried(browser) -> bool:
    """Retry until the freed slot answers (the abandoned stream ends at its next write)."""
    if streaming(browser):
        return False
    if elements(browser, ".message.assistant"):
        return True
    try:
        for retry in elements(browser, ".regenerate"):
            retry.click()
    except StaleElementReferenceException:  # the page redrew itself meanwhile: the next look finds the new button
        pass
    return False


def test_a_text_model_continues_the_text_in_the_page(text_server, browser):
    open_page(browser, text_server)
    assert browser.find_element(By.ID, "model-name").text == "shakespeare_char"
    assert browser.find_element(By.ID, "model-kind").text == "continues the text you give it"
    assert not browser.find_element(By.ID, "key-row").is_displayed()
    max_tokens = browser.find_element(By.ID, "max-tokens")
    max_tokens.clear()
    max_tokens.send_keys("60")
    reply = send_and_wait(browser, "ROMEO:")
    assert reply.startswith("ROMEO:") and len(reply) == len("ROMEO:") + 60  # the prompt, then 60 characters
    screenshot(browser, "text")
