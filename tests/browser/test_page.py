#!/usr/bin/env python3
"""The web page in a real browser: headless Chromium driven through
WebDriver (selenium + Debian's chromium-driver) against a live `lore serve`
on the handbook, with read and write keys configured.

    python3 tests/browser/test_page.py BASE_URL READ_KEY WRITE_KEY QUESTION [SCREENSHOT_DIR]

Checks, in order: the 401 path (no key, then a wrong one); a streamed
answer with a citation link that opens its passage; Esc stops an answer
and the server frees its turn; time to first token in the page against the
API's own; search with the retriever badges; upload (a good file, a file
with <script>, a broken file with the server's reason shown), finding the
upload by search, the script never running; deleting it. Prints one JSON
line of timings. Exits non-zero on the first failed check.
"""
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

base, read_key, write_key, question, *rest = sys.argv[1:]
screenshots = rest[0] if rest else None
UNIQUE = "quokkazanzibar"  # a word no handbook page contains
TIMINGS_ROUNDS = 5
IDLE_S = 1.0  # pause before each timed request
# The same request made by the browser without the page's UI: fetch and a
# stream reader, timing the first token event.
RAW_FETCH = """
const [key, body, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
const start = performance.now();
fetch("/v1/ask", {method: "POST", body,
                   headers: {"Authorization": "Bearer " + key, "Content-Type": "application/json"}})
  .then(async (response) => {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let text = "", first = null;
    for (;;) {
      const {value, done: end} = await reader.read();
      if (end) break;
      text += decoder.decode(value, {stream: true});
      if (first === null && text.includes("event: token")) first = performance.now() - start;
    }
    done(first);
  });
"""
# Resolves with ask i's time to first token once its answer is done.
WAIT_FOR_ANSWER = """
const i = arguments[0], done = arguments[arguments.length - 1];
const poll = () => {
  const t = window.loreTimings.asks[i];
  if (t && t.done_ms !== null) done(t.first_token_ms); else setTimeout(poll, 250);
};
poll();
"""
ANSWER_TOKENS = 48  # enough for a cited sentence; keeps the run short


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--force-prefers-reduced-motion"]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(options=options, service=service)


def open_ask(key, fields, on_busy=lambda: None):
    """POST /v1/ask with `fields`, waiting out a 429 (calling `on_busy`)
    as the server's Retry-After asks; returns the response and when the
    request that got it was sent."""
    request = urllib.request.Request(f"{base}/v1/ask", data=json.dumps(fields).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {key}",
                                              "Content-Type": "application/json"})
    for _ in range(30):
        start = time.perf_counter()
        try:
            return urllib.request.urlopen(request, timeout=300), start
        except urllib.error.HTTPError as err:
            if err.code != 429:
                raise
            on_busy()
            time.sleep(int(err.headers.get("Retry-After", "1")))
    raise AssertionError("the server stayed busy")


def api_ttft_ms(key):
    """Milliseconds from sending POST /v1/ask (stream) to its first token event."""
    response, start = open_ask(key, {"question": question, "stream": True, "max_tokens": ANSWER_TOKENS})
    first = None
    with response:
        for line in response:
            if first is None and line.startswith(b"event: token"):
                first = (time.perf_counter() - start) * 1000
            if line.startswith(b"event: done"):
                break
    assert first is not None, "the API streamed no token"
    return first


def shot(name):
    """A full-page screenshot for the README."""
    if not screenshots:
        return
    size = d.get_window_size()
    height = d.execute_script("return document.documentElement.scrollHeight")
    d.set_window_size(size["width"], max(height, size["height"]))
    d.execute_script("window.scrollTo(0, 0)")
    d.save_screenshot(os.path.join(screenshots, name))
    d.set_window_size(size["width"], size["height"])


def set_option(name, value):
    """Sets an ask option (opening the fold if needed)."""
    if not by_id("ask-options").get_attribute("open"):
        d.find_element(By.CSS_SELECTOR, "#ask-options summary").click()
    field = by_id(name)
    field.clear()
    field.send_keys(value)


def hold_the_turn(key, streaming, release, outcome):
    """Streams a long answer until `release` is set, then hangs up (the
    server has one generation slot and no queue, so others get 429
    meanwhile). Sets `streaming` once the first event arrived; waits out a
    429 of its own (a turn still being freed) first."""
    fields = {"question": "Tell me everything about the handbook.", "stream": True,
              "max_tokens": 1700, "temperature": 2.0, "top_p": 1.0}
    try:
        response, _ = open_ask(key, fields, lambda: outcome.append("429 while waiting for the turn"))
        with response:
            outcome.append(f"first line {response.readline()[:40]!r}")
            streaming.set()
            release.wait(120)
    except Exception as err:  # reported by the main thread
        outcome.append(f"failed: {err!r}")
    finally:
        streaming.set()

d = browser()
# Elements redrawn while a condition is checked are checked again.
wait = WebDriverWait(d, 240, ignored_exceptions=(StaleElementReferenceException,))
by_id = lambda i: d.find_element(By.ID, i)  # noqa: E731
visible = lambda i: by_id(i).is_displayed()  # noqa: E731
try:
    # -- keys: the 401 path ------------------------------------------------
    d.get(base + "/")
    wait.until(lambda _: visible("notice"))
    check("needs an API key" in by_id("notice").text, "without a key the page asks for one")
    check(visible("key-form"), "the key form opens on 401")
    by_id("key-input").send_keys("not-a-key", Keys.ENTER)
    wait.until(lambda _: "not accepted" in by_id("notice").text)
    check(True, "a wrong key is refused with a plain message")
    by_id("key-input").send_keys(read_key, Keys.ENTER)
    wait.until(lambda _: "Key accepted" in by_id("notice").text)
    check(read_key not in d.current_url, "the key never appears in the URL")
    check(d.execute_script("return sessionStorage.getItem('lore-api-key')") == read_key,
          "the key is kept in session storage")
    check(by_id("upload").get_attribute("hidden") is not None, "a read key sees no upload")

    # -- ask: streamed answer, citation link, passage ----------------------
    set_option("opt-max-tokens", str(ANSWER_TOKENS))
    box = by_id("question")
    box.send_keys(question, Keys.ENTER)
    wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, "#answer a.citation"))
    wait.until(lambda _: by_id("stop-button").get_attribute("disabled"))
    answer = by_id("answer").text
    check(answer.strip() != "", f"an answer streamed: {answer[:80]!r}")
    check(d.execute_script("return window.loreTimings.asks[0].first_token_ms") is not None,
          "tokens arrived before the end of the answer")
    link = d.find_element(By.CSS_SELECTOR, "#answer a.citation")
    n = link.get_attribute("data-n")
    source = by_id(f"source-{n}").text
    link.click()
    wait.until(lambda _: visible("passage-panel") and by_id("passage-mark").text.strip())
    check(by_id("passage-title").text in source, "the citation opens the cited source")
    check(by_id("passage-mark").tag_name == "mark", "the cited passage is highlighted")
    shot("page-answer.png")

    # -- time to first token: page against API, same question --------------
    # The page is waited for in the page itself (one WebDriver call, no
    # polling from here): chromedriver and the browser would otherwise wake
    # up while the server processes the prompt on the same cores, which the
    # API measurement does not pay for.
    page_ms, api_ms, fetch_ms = [], [], []
    d.set_script_timeout(300)
    raw_body = json.dumps({"question": question, "stream": True, "max_tokens": ANSWER_TOKENS})
    # Each measured request starts from the same idle server: one that
    # follows the previous answer at once was measured up to ~0.7 s slower.
    for _ in range(TIMINGS_ROUNDS):
        time.sleep(IDLE_S)
        api_ms.append(api_ttft_ms(read_key))
        time.sleep(IDLE_S)
        fetch_ms.append(d.execute_async_script(RAW_FETCH, read_key, raw_body))
        box.clear()
        i = d.execute_script("return window.loreTimings.asks.length")
        time.sleep(IDLE_S)
        box.send_keys(question, Keys.ENTER)
        page_ms.append(d.execute_async_script(WAIT_FOR_ANSWER, i))

    # -- stop: Esc cancels, the server frees its turn ----------------------
    box.clear()
    set_option("opt-max-tokens", "1792")
    box.send_keys("Explain the on-call rotation in detail, step by step.", Keys.ENTER)
    i = len(d.execute_script("return window.loreTimings.asks")) - 1
    wait.until(lambda _: d.execute_script(f"return window.loreTimings.asks[{i}].first_token_ms"))
    box.send_keys(Keys.ESCAPE)
    wait.until(lambda _: by_id("answer-meta").text == "Stopped.")
    check(True, "Esc stops the answer")
    started = time.perf_counter()
    api_ttft_ms(read_key)
    check(time.perf_counter() - started < 30, "the server's turn is free soon after a stop")

    # -- busy: a 429 is shown as "retrying in N s" and retried --------------
    streaming, release, outcome = threading.Event(), threading.Event(), []
    holder = threading.Thread(target=hold_the_turn, args=(read_key, streaming, release, outcome))
    holder.start()
    streaming.wait(300)
    check(outcome and outcome[-1].startswith("first line"), f"a long answer holds the turn: {outcome}")
    box.clear()
    set_option("opt-max-tokens", str(ANSWER_TOKENS))
    box.send_keys(question, Keys.ENTER)
    try:
        WebDriverWait(d, 60, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda _: "busy, retrying in" in by_id("notice").text)
    except TimeoutException:
        raise AssertionError(f"no 429 notice; notice {by_id('notice').text!r}, "
                             f"answer {by_id('answer').text[:80]!r}, holder {outcome}")
    check(True, f"a 429 shows a plain message: {by_id('notice').text!r}")
    release.set()
    holder.join()
    i = len(d.execute_script("return window.loreTimings.asks")) - 1
    wait.until(lambda _: d.execute_script(f"return window.loreTimings.asks[{i}].done_ms"))
    check(d.find_elements(By.CSS_SELECTOR, "#answer a.citation"), "the retried answer arrives")

    # -- search ------------------------------------------------------------
    by_id("tab-search").click()
    by_id("query").send_keys(question, Keys.ENTER)
    wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, "#hits li.hit"))
    badges = [b.text for b in d.find_elements(By.CSS_SELECTOR, "#hits .found-by")]
    check(badges and all(b in ("dense", "BM25", "dense + BM25") for b in badges),
          f"hits say which retriever found them: {badges[:3]}")

    # -- collections: the picker scopes every request ------------------------
    check(visible("collection-picker"), "the collection picker shows when the key has two")
    hit_paths = lambda: [a.text for a in d.find_elements(By.CSS_SELECTOR, "#hits li.hit > a")]  # noqa: E731
    Select(by_id("collection")).select_by_value("papers")
    q = by_id("query")
    q.clear()
    q.send_keys("coffee beans", Keys.ENTER)
    wait.until(lambda _: hit_paths() and all("/tiny/" in p for p in hit_paths()))
    check(True, f"search in the picked collection finds only its documents: {hit_paths()[:2]}")
    Select(by_id("collection")).select_by_value("default")
    q.clear()
    q.send_keys(question, Keys.ENTER)
    wait.until(lambda _: hit_paths() and all("/tiny/" not in p for p in hit_paths()))
    check(True, "back in default, its documents again")

    # -- documents: upload with a write key --------------------------------
    by_id("key-button").click()
    by_id("key-input").send_keys(write_key, Keys.ENTER)
    wait.until(lambda _: by_id("upload").get_attribute("hidden") is None)
    check(True, "a write key sees the upload")
    by_id("tab-docs").click()
    wait.until(lambda _: " of " in by_id("docs-page").text)
    documents_before = int(by_id("docs-page").text.split(" of ")[1])
    work = tempfile.mkdtemp()
    good = os.path.join(work, "browser-upload.md")
    with open(good, "w") as f:
        f.write(f"# Browser upload\n\nThe {UNIQUE} policy says uploads are checked in a real browser.\n")
    hostile = os.path.join(work, "hostile-note.md")
    with open(hostile, "w") as f:
        f.write(f"# Hostile note\n\n{UNIQUE} hostile <script>window.__pwned = 1</script> "
                "<img src=x onerror=\"window.__pwned = 2\"> <b>bold?</b>\n")
    broken = os.path.join(work, "broken.pdf")
    with open(broken, "wb") as f:
        f.write(b"%PDF-1.7 this is not really a pdf \x00\x01\x02")
    by_id("file-input").send_keys("\n".join([good, hostile, broken]))
    wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#uploads .verdict.ok, #uploads .verdict.bad")) == 3)
    verdicts = {li.find_element(By.CLASS_NAME, "name").text: li.find_element(By.CLASS_NAME, "verdict").text
                for li in d.find_elements(By.CSS_SELECTOR, "#uploads li")}
    check(verdicts["browser-upload.md"].startswith("added"), f"upload added: {verdicts}")
    check(verdicts["hostile-note.md"].startswith("added"), "the hostile note is stored as a document")
    check(verdicts["broken.pdf"].startswith("skipped: ") and len(verdicts["broken.pdf"]) > 12,
          f"a broken file shows the server's reason: {verdicts['broken.pdf']!r}")
    by_id("docs-filter").send_keys("browser-upload", Keys.ENTER)
    wait.until(lambda _: "browser-upload.md" in by_id("docs").text)
    check(by_id("docs-page").text == "1–1 of 1", "the upload is listed, found by its path")
    by_id("docs-filter").clear()
    by_id("docs-filter").send_keys(Keys.ENTER)
    wait.until(lambda _: by_id("docs-page").text.endswith(f" of {documents_before + 2}"))
    check(True, "the document count went up by two")
    shot("page-documents.png")

    # -- summarize: one document, read whole, cited to itself --------------
    by_id("docs-filter").clear()
    by_id("docs-filter").send_keys("browser-upload", Keys.ENTER)
    wait.until(lambda _: by_id("docs-page").text == "1–1 of 1" and "browser-upload.md" in by_id("docs").text)
    i = d.execute_script("return window.loreTimings.asks.length")
    d.find_element(By.CSS_SELECTOR, "#docs tr button.summarize").click()
    d.execute_async_script(WAIT_FOR_ANSWER, i)
    check(by_id("view-ask").get_attribute("hidden") is None, "Summarize shows the answer")
    cited = [li.text for li in d.find_elements(By.CSS_SELECTOR, "#sources li")]
    check(all("browser-upload.md" in c for c in cited), f"a summary cites only its document: {cited}")
    check("does not cover" not in by_id("answer-meta").text, "a summary needs no question words")
    d.execute_script("document.getElementById('opt-document').value = ''")

    # -- the upload is found by search, and its script never runs ----------
    by_id("tab-search").click()
    q = by_id("query")
    q.clear()
    q.send_keys(UNIQUE, Keys.ENTER)
    wait.until(lambda _: UNIQUE in by_id("hits").text)
    paths = [a.text for a in d.find_elements(By.CSS_SELECTOR, "#hits li.hit > a")]
    check(any(p.endswith("browser-upload.md") for p in paths), f"search finds the upload: {paths}")
    check(any("<script>" in s.text for s in d.find_elements(By.CSS_SELECTOR, "#hits .snippet")),
          "the document's <script> is shown as text")
    hostile_link = next(a for a in d.find_elements(By.CSS_SELECTOR, "#hits li.hit > a")
                        if a.text.endswith("hostile-note.md"))
    hostile_link.click()
    wait.until(lambda _: UNIQUE in by_id("passage-mark").text)
    time.sleep(0.5)
    check(d.execute_script("return window.__pwned === undefined"), "the document's script did not run")
    check(not d.find_elements(By.CSS_SELECTOR, "#hits script, #hits img, #passage script, #passage img, #passage b"),
          "no element from a document reached the page")

    # -- delete ------------------------------------------------------------
    by_id("tab-docs").click()
    for name in ["browser-upload.md", "hostile-note.md"]:
        by_id("docs-filter").clear()
        by_id("docs-filter").send_keys(name, Keys.ENTER)
        # The list is drawn anew when the filter applies: wait for that
        # drawing, so the button clicked is the one that stays.
        wait.until(lambda _: by_id("docs-page").text == "1–1 of 1" and name in by_id("docs").text)
        button = d.find_element(By.CSS_SELECTOR, "#docs tr button.delete")
        button.click()
        check(button.text == "Really delete?", "delete asks for a second click")
        button.click()
        wait.until(lambda _: name not in by_id("docs").text)
    check(True, "the uploads are deleted")
    by_id("tab-search").click()
    q = by_id("query")
    q.clear()
    q.send_keys(UNIQUE, Keys.ENTER)
    wait.until(lambda _: by_id("search-meta").text and "Searching" not in by_id("search-meta").text)
    check(UNIQUE not in by_id("hits").text, "a deleted document is no longer found")

    # -- a phone-width screen, and the dark theme ---------------------------
    d.set_window_size(390, 844)
    by_id("tab-ask").click()
    overflow = d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    widest = d.execute_script(
        "return [...document.querySelectorAll('body *')]"
        ".filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)"
        ".slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.className)")
    check(overflow <= 0, f"nothing overflows a phone-width screen ({overflow} px: {widest})")
    background = lambda: d.execute_script("return getComputedStyle(document.body).backgroundColor")  # noqa: E731
    light = background()
    d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    check(background() != light, f"the dark theme follows the system ({light} -> {background()})")

    # -- no errors in the console (CSP violations would show here) ----------
    errors = [e["message"] for e in d.get_log("browser")
              if e["level"] == "SEVERE" and "/v1/" not in e["message"]]
    check(not errors, f"no console errors: {errors[:3]}")

    timings = {
        "api_first_token_ms": round(statistics.median(api_ms), 1),
        "page_first_token_ms": round(statistics.median(page_ms), 1),
        "browser_fetch_first_token_ms": round(statistics.median(fetch_ms), 1),
        "rounds": TIMINGS_ROUNDS,
    }
    timings["page_minus_api_ms"] = round(timings["page_first_token_ms"] - timings["api_first_token_ms"], 1)
    print(json.dumps(timings))
except (AssertionError, TimeoutException) as err:
    print(f"FAILED: {type(err).__name__}: {err}", file=sys.stderr)
    if screenshots or os.environ.get("LORE_BROWSER_FAILURE_SHOT"):
        d.save_screenshot(os.environ.get("LORE_BROWSER_FAILURE_SHOT", "/tmp/lore-browser-failure.png"))
    print("notice:", by_id("notice").text, file=sys.stderr)
    sys.exit(1)
finally:
    d.quit()
