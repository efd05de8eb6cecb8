"""The todo chatbot's web page (``GET /``, examples/todo_chatbot/static/) in a real browser:
Debian's headless Chromium driven by Selenium, against the example served as a real process
(``python -m examples.todo_chatbot``) on a real PostgreSQL, the scripted model streaming its
text in chunks.

The tests type and click as a user does, then check what the page shows against what the API
(and so the database) holds: the streamed reply growing in the DOM and then stored whole, the
chat in the sidebar, rename, regenerate and "< 1/2 >" between versions, edit, search.

Skipped, saying what is missing, where Selenium, Chromium or its driver is not installed
(``.ci/run`` installs Debian's ``chromium`` and ``chromium-driver``; the ``dev`` extra brings
Selenium). ``CHATSTORE_PAGE_SCREENSHOT=examples/todo_chatbot/page.png`` makes the versions
test write its screenshot there too (the README's picture); otherwise it stays in the test's
temporary folder.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from examples.todo_chatbot.database import add_user

from ..conftest import Server, create_database
from .test_todo_burst import Served, serve

INSTALL = "apt-get install chromium chromium-driver; .ci/run installs it"
# The scripted model thinks THINK seconds per call and sends its text in chunks CHUNK_DELAY
# apart: slow enough to see a reply grow, fast enough for a short test.
THINK = "0.1"
CHUNK_DELAY = 0.25
WAIT = 15.0


def _program(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists()
                                       else None)
        if found:
            return found
    return None


CHROMIUM = _program("chromium", "chromium-browser")
CHROMEDRIVER = _program("chromedriver")
# Checked before any fixture starts a server: a machine without them skips at once.
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason=f"chromium is not installed ({INSTALL})"),
    pytest.mark.skipif(CHROMEDRIVER is None,
                       reason=f"chromium-driver is not installed ({INSTALL})"),
]


@pytest.fixture(scope="module")
def server(pg_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The example on a database of its own, shared by this module's tests: each test is a
    user of its own (the example's data, chats and tasks, is per user)."""
    url, janitor = create_database(pg_server, None)
    try:
        with serve(url, tmp_path_factory.mktemp("page") / "server.log", THINK,
                   env={"TODO_MODEL_CHUNK_DELAY": str(CHUNK_DELAY)}) as served:
            yield served
    finally:
        janitor.drop()


@pytest.fixture(scope="module")
def chrome() -> Iterator[webdriver.Chrome]:
    """One headless Chromium for the module's tests."""
    assert CHROMIUM is not None and CHROMEDRIVER is not None  # else skipped
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,860"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    started = time.monotonic()
    # The driver given by path: Selenium Manager downloads nothing.
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    print(f"\nchromium started in {time.monotonic() - started:.2f} s")
    try:
        yield driver
    finally:
        driver.quit()


def console(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """What the page logged since the last call (errors of its script, failed requests)."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return entries


_users = itertools.count(1)


@dataclass
class Site:
    """The served example as one user sees it."""

    served: Served
    user: str

    def api(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.served.base}/api/{self.user}{path}", params=params,
                             timeout=10)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def site(server: Served, request: pytest.FixtureRequest) -> Site:
    """A new user of the served example (or the user named by an indirect parameter: the
    README's screenshot shows ``demo``, whom the example adds itself)."""
    user = getattr(request, "param", None) or f"page-user-{next(_users)}"
    add_user(server.url, user)
    return Site(server, user)


@pytest.fixture
def browser(chrome: webdriver.Chrome, site: Site) -> Iterator[WebDriver]:
    """The page opened as this test's user."""
    console(chrome)  # what earlier tests left
    chrome.get(f"{site.served.base}/?user={site.user}")
    yield chrome
    # The page's script logged no error (a failed request, an exception) along the way.
    errors = [entry["message"] for entry in console(chrome) if entry["level"] == "SEVERE"]
    assert errors == [], site.served.output()


# -- reading the page ------------------------------------------------------------------------

# What #messages shows: one entry per block (a user's message, or the reply after it).
_BLOCKS = """
return [...document.querySelectorAll('#messages .msg')].map((node) => ({
  role: node.classList.contains('user') ? 'user' : 'assistant',
  seq: node.dataset.seq === undefined ? null : Number(node.dataset.seq),
  text: [...node.querySelectorAll('p.text')].map((p) => p.textContent).join('\\n'),
  tools: [...node.querySelectorAll('p.tool')].map((p) => p.textContent),
  versions: node.querySelector('.versions .position')?.textContent ?? null,
  found: node.classList.contains('found'),
  streaming: node.classList.contains('streaming'),
}));
"""
_SIDEBAR = """
return [...document.querySelectorAll('#chats li')].map((li) => ({
  id: li.dataset.id, title: li.textContent, active: li.classList.contains('active')}));
"""


def blocks(driver: WebDriver) -> list[dict[str, Any]]:
    shown: list[dict[str, Any]] = driver.execute_script(_BLOCKS)
    return shown


def sidebar(driver: WebDriver) -> list[dict[str, Any]]:
    chats: list[dict[str, Any]] = driver.execute_script(_SIDEBAR)
    return chats


def status(driver: WebDriver) -> str:
    text: str = driver.execute_script("return document.getElementById('status').textContent")
    return text


def until(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str,
          timeout: float = WAIT) -> Any:
    """Wait for ``condition`` to hold (return a truthy value), else fail saying ``what`` and
    what the page shows."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)
    except TimeoutException:
        pytest.fail(f"after {timeout} s the page still does not show {what}: "
                    f"{blocks(driver)}, sidebar {sidebar(driver)}, status {status(driver)!r}")


def idle(driver: WebDriver) -> None:
    """No action of the page's in flight (it marks the body busy while one runs)."""
    until(driver, lambda d: not d.execute_script(
        "return document.body.classList.contains('busy')"), "the page idle")


def click(driver: WebDriver, selector: str) -> None:
    driver.find_element(By.CSS_SELECTOR, selector).click()


def send(driver: WebDriver, text: str) -> list[str]:
    """Type ``text`` in the composer, send it, and read the reply's text while it streams:
    every different text the page showed for it, until the turn ended and the page showed
    the stored conversation."""
    box = driver.find_element(By.ID, "input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)
    seen: list[str] = []
    stop = time.monotonic() + WAIT
    while time.monotonic() < stop:
        streaming = [b for b in blocks(driver) if b["streaming"]]
        busy = driver.execute_script("return document.body.classList.contains('busy')")
        if streaming and streaming[0]["text"] and streaming[0]["text"] not in seen:
            seen.append(streaming[0]["text"])
        if seen and not streaming and not busy:
            return seen
        time.sleep(0.03)
    pytest.fail(f"the streamed reply to {text!r} did not end: {seen}, {blocks(driver)}, "
                f"status {status(driver)!r}")


# -- the API, to check the page against ----------------------------------------------------

def chats(site: Site) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = site.api("/conversations")["items"]
    return items


def stored(site: Site, conversation_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = site.api(f"/conversations/{conversation_id}/messages",
                                      limit=1000)["items"]
    return items


def versions(site: Site, conversation_id: str, seq: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = site.api(f"/conversations/{conversation_id}/messages/"
                                            f"{seq}/alternatives")["items"]
    return items


def replies(messages: list[dict[str, Any]]) -> list[str]:
    """The assistant's texts of a stored conversation, as the page shows them."""
    return [m["content"] for m in messages if m["role"] == "assistant" and m["content"]]


# -- the tests -------------------------------------------------------------------------------

def test_a_streamed_reply_grows_on_the_page_and_the_chat_joins_the_sidebar(
        browser: WebDriver, site: Site) -> None:
    until(browser, lambda d: d.find_element(By.ID, "empty"), "the empty new chat")
    sent = time.monotonic()
    seen = send(browser, "add milk and eggs")
    took = time.monotonic() - sent

    # The conversation as stored: the page opened it when the turn ended.
    (chat,) = chats(site)
    messages = stored(site, chat["current_id"])
    (reply,) = replies(messages)
    # The reply grew in the page: several partial texts, each the start of the stored one,
    # before the whole (its text comes in about four chunks CHUNK_DELAY apart).
    print(f"streamed reply: {len(seen)} texts shown while it grew, whole in {took:.2f} s")
    # (The poll may miss the last chunk: the page shows the stored turn right after it.)
    partial = [text for text in seen if text != reply]
    assert len(partial) >= 2, seen
    assert all(reply.startswith(text) for text in seen), (seen, reply)

    # The stored turn, shown: the user's message, then the reply's tool calls and text.
    shown = blocks(browser)
    assert [(b["role"], b["seq"], b["text"]) for b in shown] == [
        ("user", 1, "add milk and eggs"), ("assistant", 2, reply)]
    assert shown[1]["tools"] == ['add_task({"title": "milk"})', 'add_task({"title": "eggs"})']
    assert [b["versions"] for b in shown] == [None, None]  # one version of each
    assert sidebar(browser) == [{"id": chat["id"], "title": "add milk and eggs",
                                 "active": True}]
    # The day's usage, from the ledger, in the sidebar: what the API says (not zero).
    total = site.api("/usage")["total"]
    tokens = total["input_tokens"] + total["output_tokens"]
    assert tokens > 0
    until(browser, lambda d: d.find_element(By.ID, "usage").text == f"today: {tokens} tokens",
          "the day's usage")

    # A second message goes to the same conversation; the reply sees the first.
    send(browser, "hello again")
    (chat,) = chats(site)
    messages = stored(site, chat["current_id"])
    assert [b["text"] for b in blocks(browser)] == [
        "add milk and eggs", reply, "hello again", replies(messages)[-1]]
    assert "Before that you said 1 thing(s)" in replies(messages)[-1]

    # Rename, in the header: the sidebar and the API agree.
    click(browser, "#rename")
    title = browser.find_element(By.ID, "rename-input")
    title.send_keys(Keys.CONTROL, "a")
    title.send_keys("Groceries", Keys.ENTER)
    until(browser, lambda d: sidebar(d)[0]["title"] == "Groceries", "the renamed chat")
    assert browser.find_element(By.ID, "title").text == "Groceries"
    assert [c["title"] for c in chats(site)] == ["Groceries"]

    # A new chat: it goes on top of the sidebar, active; the first one is still there.
    click(browser, "#new-chat")
    send(browser, "plan my week")
    listed = chats(site)
    assert [c["title"] for c in listed] == ["plan my week", "Groceries"]
    assert sidebar(browser) == [
        {"id": listed[0]["id"], "title": "plan my week", "active": True},
        {"id": listed[1]["id"], "title": "Groceries", "active": False}]
    # Back to the first chat from the sidebar.
    browser.find_elements(By.CSS_SELECTOR, "#chats li")[1].click()
    until(browser, lambda d: [b["text"] for b in blocks(d)][:1] == ["add milk and eggs"],
          "the first chat again")


@pytest.mark.parametrize("site", ["demo"], indirect=True)
def test_regenerate_edit_and_switch_versions(browser: WebDriver, site: Site,
                                            tmp_path: Path) -> None:
    send(browser, "add milk and eggs")
    (chat,) = chats(site)
    first = chat["current_id"]
    (original,) = replies(stored(site, first))

    # Regenerate the reply: a new version, now current, "2/2"; the old one is kept.
    click(browser, ".msg.assistant .regenerate")
    until(browser, lambda d: [b["versions"] for b in blocks(d)] == [None, "2/2"],
          "the regenerated reply as 2/2")
    idle(browser)
    (chat,) = chats(site)
    regenerated = chat["current_id"]
    assert regenerated != first
    (again,) = replies(stored(site, regenerated))
    assert again != original  # the scripted model added the tasks again: new ids
    assert blocks(browser)[1]["text"] == again
    listed = versions(site, regenerated, 2)
    assert [(v["conversation_id"], v["current"]) for v in listed] == [
        (first, False), (regenerated, True)]
    assert [v["message"]["content"] for v in listed] == [None, None]  # tool calls first

    # "<": the first version again, made current; the API says the same.
    click(browser, ".msg.assistant .versions .prev")
    until(browser, lambda d: [b["versions"] for b in blocks(d)] == [None, "1/2"],
          "version 1/2")
    idle(browser)
    assert blocks(browser)[1]["text"] == original
    (chat,) = chats(site)
    assert chat["current_id"] == first
    assert [v["current"] for v in versions(site, first, 2)] == [True, False]
    assert browser.find_element(By.CSS_SELECTOR, ".msg.assistant .versions .prev"
                                ).get_attribute("disabled") is not None

    # ">": back to the regenerated one.
    click(browser, ".msg.assistant .versions .next")
    until(browser, lambda d: [b["versions"] for b in blocks(d)] == [None, "2/2"],
          "version 2/2 again")
    idle(browser)
    assert blocks(browser)[1]["text"] == again
    assert chats(site)[0]["current_id"] == regenerated

    # Edit the user's message: a third version of the chat, from seq 1; the page shows it
    # with "2/2" on the message (its versions) and a reply to the edited text.
    click(browser, ".msg.user .edit")
    box = browser.find_element(By.CSS_SELECTOR, ".msg.user .edit-box")
    box.clear()
    box.send_keys("add bread")
    click(browser, ".msg.user .save")
    until(browser, lambda d: [(b["text"], b["versions"]) for b in blocks(d)][:1] == [
        ("add bread", "2/2")], "the edited message as 2/2")
    idle(browser)
    (chat,) = chats(site)  # still one chat in the list
    edited = chat["current_id"]
    assert edited not in (first, regenerated)
    messages = stored(site, edited)
    assert messages[0]["content"] == "add bread"
    assert [b["text"] for b in blocks(browser)] == ["add bread", replies(messages)[0]]
    assert blocks(browser)[1]["tools"] == ['add_task({"title": "bread"})']
    assert [(v["message"]["content"], v["current"]) for v in versions(site, edited, 1)] == [
        ("add milk and eggs", False), ("add bread", True)]
    assert [s["title"] for s in sidebar(browser)] == ["add milk and eggs"]

    # "<" on the message: the version it was edited from, with its own reply versions.
    click(browser, ".msg.user .versions .prev")
    until(browser, lambda d: [(b["text"], b["versions"]) for b in blocks(d)] == [
        ("add milk and eggs", "1/2"), (again, "2/2")], "the unedited message as 1/2")
    idle(browser)
    assert chats(site)[0]["current_id"] == regenerated

    # The next message continues the version shown.
    send(browser, "thanks")
    messages = stored(site, regenerated)
    assert [b["text"] for b in blocks(browser)] == [
        "add milk and eggs", again, "thanks", replies(messages)[-1]]
    assert [b["versions"] for b in blocks(browser)] == ["1/2", "2/2", None, None]
    assert chats(site)[0]["current_id"] == regenerated

    # In the database: one chat of three versions (a root, two forks), the root pointing at
    # the version shown; the tasks every run added (a regeneration runs the tools again).
    with psycopg.connect(site.served.url) as conn:
        rows = conn.execute("SELECT id::text, root_id::text, current_id::text "
                            "FROM conversations WHERE user_id = %s", (site.user,)).fetchall()
        assert sorted(rows) == sorted([(first, None, regenerated), (regenerated, first, None),
                                       (edited, first, None)])
        titles = conn.execute("SELECT title FROM tasks WHERE user_id = %s ORDER BY title",
                              (site.user,)).fetchall()
        assert [t for (t,) in titles] == ["bread", "eggs", "eggs", "milk", "milk"]

    # The screenshot (the README's, with CHATSTORE_PAGE_SCREENSHOT=its path).
    path = tmp_path / "page.png"
    assert browser.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if target := os.environ.get("CHATSTORE_PAGE_SCREENSHOT"):
        shutil.copyfile(path, target)


def test_search_opens_the_version_that_holds_the_match(browser: WebDriver,
                                                        site: Site) -> None:
    send(browser, "add milk and eggs")
    send(browser, "tell me about the quarterly report")
    click(browser, "#new-chat")
    send(browser, "hello there")
    listed = chats(site)
    titles = {c["id"]: c["title"] for c in listed}
    assert list(titles.values()) == ["hello there", "add milk and eggs"]

    def search(query: str) -> list[str]:
        box = browser.find_element(By.ID, "search")
        box.clear()
        box.send_keys(query, Keys.ENTER)
        hits = site.api("/search", query=query)["items"]
        until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li.hit"))
              == len(hits), f"{len(hits)} search results for {query!r}")
        # Each shown as its chat's title and the message, in the API's order.
        shown = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#results li.hit")]
        assert shown == [f"{titles[h['chat_id']]}\n{h['message']['content']}" for h in hits]
        return shown

    # The user's message and the reply that quotes it match, both in the first chat.
    shown = search("quarterly")
    assert len(shown) == 2
    assert all(text.startswith("add milk and eggs\n") for text in shown)
    browser.find_elements(By.CSS_SELECTOR, "#results li.hit")[0].click()
    until(browser, lambda d: [b["text"] for b in blocks(d) if b["found"]], "the match outlined")
    (found,) = [b for b in blocks(browser) if b["found"]]
    assert "quarterly" in found["text"]
    assert [s["active"] for s in sidebar(browser)] == [False, True]

    # Edit the first message: the current version no longer holds the quarterly messages,
    # so a match opens the version that does, "1/2" on the edited message.
    idle(browser)
    click(browser, ".msg.user .edit")
    box = browser.find_element(By.CSS_SELECTOR, ".msg.user .edit-box")
    box.clear()
    box.send_keys("add bread")
    click(browser, ".msg.user .save")
    until(browser, lambda d: [b["text"] for b in blocks(d)][:1] == ["add bread"], "the edit")
    idle(browser)
    assert "quarterly" not in " ".join(b["text"] for b in blocks(browser))
    search("quarterly")
    browser.find_elements(By.CSS_SELECTOR, "#results li.hit")[0].click()
    until(browser, lambda d: [b["text"] for b in blocks(d) if b["found"]],
          "the match outlined in the older version")
    until(browser, lambda d: blocks(d)[0]["versions"] == "1/2", "the older version as 1/2")
    assert blocks(browser)[0]["text"] == "add milk and eggs"
    (found,) = [b for b in blocks(browser) if b["found"]]
    assert "quarterly" in found["text"]

    # A word only the edit wrote is found in the current version.
    search("bread")
    browser.find_elements(By.CSS_SELECTOR, "#results li.hit")[0].click()
    until(browser, lambda d: [b for b in blocks(d) if b["found"]]
          and blocks(d)[0]["text"] == "add bread", "the match in the current version")
    until(browser, lambda d: blocks(d)[0]["versions"] == "2/2", "the edited version as 2/2")
