"""The playground page (web/) in a real headless Chromium, against the local stack.

Starts the stand-in model (`scripts/fake-llm.py`: it answers in Markdown, citing the numbered
passages it is given as a model told to cite them does) and `scripts/dev.sh` (moto, the
example docs, `cargo lambda watch`, the page's server) on free loopback ports in a directory
of its own, waits until the example docs are indexed, then drives Debian's `chromium` through
`chromedriver` with Selenium: the page loads, the dev token is fetched; a streamed answer is
rendered as Markdown (list, emphasis, table, code) with its `[n]` markers linked to its
sources; a marker opens its passage in context with its heading; the reply's usage line and
the month's usage show; thumbs down then up are stored (read back through the API); HTML and
`javascript:` links in an answer stay text; the session is listed and reopened with its
rating; an upload reaches `ready` and is then cited. Screenshots of each step go to
target/playground/. Stops the stack (its whole process group) at the end, whatever happened.

Without chromium and chromedriver it prints why it is skipped and exits 0, unless
COACH_REQUIRE_BROWSER=1 (CI), where that is a failure.

    .venv/bin/python tests/browser/playground.py
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "target" / "playground"
# The first request waits for `cargo lambda watch` to build every function.
STARTUP_SECS = 900
STEP_SECS = 120


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url, body=None, token=None, timeout=30):
    """(status, parsed JSON or None) of a loopback request; never raises for HTTP errors."""
    headers = {"content-type": "application/json"} if body is not None else {}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return None, None


def wait_for(what, check, seconds, stack=None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if stack is not None and stack.poll() is not None:
            raise RuntimeError(f"the stack exited (status {stack.returncode}) while waiting for {what}")
        result = check()
        if result:
            return result
        time.sleep(1)
    raise TimeoutError(f"no {what} within {seconds} s")


def stop(stack):
    try:
        os.killpg(stack.pid, signal.SIGTERM)
        stack.wait(timeout=20)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(stack.pid, signal.SIGKILL)
        stack.wait()


@contextlib.contextmanager
def local_stack(log_path, extra_env=None):
    """`scripts/dev.sh` on free loopback ports in a directory of its own, with `extra_env`:
    yields (the functions' base URL, the dev token, the page's port, the directory) once the
    example docs are indexed, and stops the stack (its whole process group) after."""
    moto, watch, web = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="coach-stack-") as workdir:
        env = dict(os.environ, COACH_MOTO_PORT=str(moto), COACH_WATCH_PORT=str(watch), COACH_WEB_PORT=str(web),
                   COACH_DEV_DIR=str(Path(workdir) / "dev"), RUST_LOG="warn", **(extra_env or {}))
        with open(log_path, "w") as log:
            stack = subprocess.Popen([str(ROOT / "scripts" / "dev.sh")], cwd=ROOT, env=env, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            dev_json = Path(workdir) / "dev" / "web" / "dev.json"
            wait_for("dev.json", dev_json.exists, STARTUP_SECS, stack)
            token = json.loads(dev_json.read_text())["token"]
            base = f"http://127.0.0.1:{watch}/lambda-url"
            wait_for("the chat function", lambda: request(f"{base}/chat/health/live")[0] == 200, STARTUP_SECS, stack)
            # The example docs are indexed through the relay: wait until chat cites them.
            def cited():
                status, body = request(f"{base}/chat/qa", {"question": "feedback", "use_documents": True}, token)
                return status == 200 and body["sources"]
            wait_for("the example docs indexed", cited, STARTUP_SECS, stack)
            yield base, token, web, workdir
        finally:
            stop(stack)


@contextlib.contextmanager
def fake_model(log_path):
    """The stand-in OpenAI-compatible model on a free loopback port: yields the settings that
    point Coach at it, and stops it after."""
    port = free_port()
    with open(log_path, "w") as log:
        fake = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "fake-llm.py"), "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield {"COACH_LLM_PROVIDER": "openai", "COACH_LLM_BASE_URL": f"http://127.0.0.1:{port}/v1"}
    finally:
        stop(fake)


def browser(chromium, chromedriver):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1100", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)


# The Markdown renderer (web/markdown.js) on what models write and on what must stay text:
# (Markdown, the HTML it must become), markers [1] and [2] standing for two sources.
RENDERED = [
    ("Hello **bold**, *em*, `co*de*` [1] [3] [1, 2]\nsecond line",
     '<p>Hello <strong>bold</strong>, <em>em</em>, <code>co*de*</code> <a class="cite">[1]</a> [3] '
     '<a class="cite">[1]</a><a class="cite">[2]</a><br>second line</p>'),
    ("1. one [1]\n2. two\n   - nested *a*\n   - nested b\n3. three",
     '<ol><li>one <a class="cite">[1]</a></li><li><p>two</p><ul><li>nested <em>a</em></li><li>nested b</li></ul></li>'
     "<li>three</li></ol>"),
    ("- a\n\n- b\n\npara", "<ul><li>a</li><li>b</li></ul><p>para</p>"),
    ("| A | B |\n|:--|--:|\n| x \\| y | **z** |\n| 1 | 2 |",
     '<table><thead><tr><th class="align-left">A</th><th class="align-right">B</th></tr></thead><tbody>'
     '<tr><td class="align-left">x | y</td><td class="align-right"><strong>z</strong></td></tr>'
     '<tr><td class="align-left">1</td><td class="align-right">2</td></tr></tbody></table>'),
    ("```rust\nfn main() { <b> }\n```\nafter",
     '<pre><code data-language="rust">fn main() { &lt;b&gt; }</code></pre><p>after</p>'),
    ("# Title\n> quote **q**\n> more\n\n---\n~~gone~~ https://example.com/a).",
     "<h3>Title</h3><blockquote><p>quote <strong>q</strong><br>more</p></blockquote><hr><p><del>gone</del> "
     '<a href="https://example.com/a" target="_blank" rel="noopener noreferrer nofollow">https://example.com/a</a>).</p>'),
    ("[ok](https://x.org/p?q=1) [no](javascript:alert) [mail](mailto:a@b.c) [data](data:text/html,x)",
     '<p><a href="https://x.org/p?q=1" target="_blank" rel="noopener noreferrer nofollow">ok</a> no '
     '<a href="mailto:a@b.c" target="_blank" rel="noopener noreferrer nofollow">mail</a> data</p>'),
    ('<img src=x onerror="alert(1)"> <script>alert(2)</script> snake_case_word _em_',
     '<p>&lt;img src=x onerror="alert(1)"&gt; &lt;script&gt;alert(2)&lt;/script&gt; snake_case_word <em>em</em></p>'),
    ("```\nunclosed, as while streaming\n<i>", "<pre><code>unclosed, as while streaming\n&lt;i&gt;</code></pre>"),
]


def check_rendering(driver):
    script = """const box = document.createElement('div');
    box.append(Markdown.render(arguments[0], (n) => n <= 2 ? Object.assign(document.createElement('a'),
      {className: 'cite', textContent: `[${n}]`}) : null));
    return box.innerHTML;"""
    for markdown, html in RENDERED:
        got = driver.execute_script(script, markdown)
        assert got == html, f"Markdown {markdown!r}:\n  rendered {got}\n  expected {html}"


def drive(driver, page, workdir, base, token):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def by_id(name):
        return driver.find_element(By.ID, name)

    def css(selector, within=None):
        return (within or driver).find_elements(By.CSS_SELECTOR, selector)

    def until(what, condition, seconds=STEP_SECS):
        try:
            return WebDriverWait(driver, seconds, poll_frequency=0.5).until(lambda d: condition())
        except Exception:
            driver.save_screenshot(str(SHOTS / "failed.png"))
            raise AssertionError(f"{what}; page status: {by_id('chat-status').text!r}, "
                                 f"{by_id('upload-status').text!r}, {by_id('identity').text!r}")

    def shot(name):
        driver.save_screenshot(str(SHOTS / f"{name}.png"))
        print(f"playground: {name}")

    def ask(question):
        """Sends `question`; the reply's element once it is stored (its usage line shown)."""
        answers = len(css(".message.assistant .usage"))
        by_id("message").send_keys(question)
        by_id("send").click()
        until("an answer", lambda: len(css(".message.assistant .usage")) > answers
              and "answered by" in by_id("chat-status").text)
        return css(".message.assistant")[-1]

    def stored_reply():
        """The session's latest reply as Coach holds it."""
        session = by_id("session-label").text.removeprefix("session ")
        status, page = request(f"{base}/chat/sessions/{session}/messages?limit=10", token=token)
        assert status == 200, status
        return next(m for m in page["messages"] if m["role"] == "assistant")

    driver.get(page)
    until("the page", lambda: driver.title == "Coach playground")
    until("the stack's addresses from dev.json", lambda: "/lambda-url/chat" in by_id("chat-url").get_attribute("value"))
    check_rendering(driver)
    shot("1-loaded")

    by_id("fetch-token").click()
    until("the dev token", lambda: by_id("identity").text == "dev token loaded")
    by_id("whoami").click()
    until("the caller", lambda: by_id("identity").text.startswith("dev-user of dev"))

    # Markdown: the stand-in's list, emphasis, table and code, each marker a link to a source.
    reply = ask("How do I give useful feedback to a colleague?")
    answer = css(".answer", reply)[0]
    sources = css("#sources li")
    assert sources, "no sources shown"
    items = css("ol > li", answer)
    assert len(items) == len(sources), f"{len(items)} list items for {len(sources)} sources"
    assert css("ol > li strong", answer) and css("em", answer), answer.get_attribute("innerHTML")
    rows = css("table tbody tr", answer)
    assert len(rows) == len(sources) and css("table thead th", answer), answer.get_attribute("innerHTML")
    assert [c.text for c in css("code", answer)] == ["fake-llm"], answer.get_attribute("innerHTML")
    markers = css("a.cite", answer)
    assert [m.text for m in markers] == [f"[{n}]" for n in range(1, len(sources) + 1)] * 2, [m.text for m in markers]
    assert "**" not in answer.text and "| ---" not in answer.text, answer.text
    assert by_id("session-label").text.startswith("session "), by_id("session-label").text
    shot("2-markdown")

    # A marker opens its passage, in context, where the document has it.
    stored = stored_reply()
    first = stored["sources"][0]
    markers[0].click()
    until("the passage", lambda: css("#passage-text p.cited"))
    status, chunk = request(f"{base}/upload-url/documents/{first['document_id']}/chunks/{first['chunk']}?context=1",
                            token=token)
    assert status == 200, status
    assert by_id("passage-title").text == f"[1] {first['title']}", by_id("passage-title").text
    assert css("#passage-text p.cited")[0].text == chunk["passage"]["text"].strip()
    assert len(css("#passage-text p.context")) == len(chunk["before"]) + len(chunk["after"])
    where = by_id("passage-place").text
    assert where.startswith(f"part {first['chunk'] + 1} of {chunk['chunks']}"), where
    assert first.get("heading") and first["heading"] in where, (first, where)
    assert "source-1" == css("#sources li.selected")[0].get_attribute("id")
    shot("3-passage")

    # The usage line: the dated model and its tokens, and the month's usage.
    usage = css(".usage", reply)[0].text
    assert usage.startswith(stored["model"] + " · ") and "out tokens" in usage, usage
    assert stored["model"] == "gpt-4o-mini-2024-07-18", stored["model"]
    until("the month's usage", lambda: " tokens in " in by_id("usage-line").text)

    # Thumbs down, then up: each stored on the reply, the pressed one shown.
    for rating in ("down", "up"):
        css(f".rate.{rating}", reply)[0].click()
        until(f"rated {rating}", lambda: css(f".rate.{rating}", reply)[0].get_attribute("aria-pressed") == "true")
        assert stored_reply()["feedback"]["rating"] == rating
    assert css(".rate.down", reply)[0].get_attribute("aria-pressed") == "false"
    shot("4-feedback")

    # An answer quoting HTML and a javascript: link shows them as text.
    title = driver.title
    hostile = ask('Is <img src="x" id="injected" onerror="document.title=1"> fine? '
                  "See [this](javascript:document.title=2) and <script>document.title=3</script>")
    text = css(".answer", hostile)[0].text
    assert '<img src="x" id="injected"' in text and "<script>" in text, text
    assert not css("#messages img, #messages script, #injected"), "HTML from an answer became elements"
    links = [a.get_attribute("href") or "" for a in css("#messages a")]
    assert not [h for h in links if not h.startswith(("http", "#"))], links
    assert driver.title == title
    shot("5-sanitised")

    # Reopened from the list (after "New session" emptied the view), with its rating.
    by_id("new-session").click()
    until("an empty view", lambda: not css(".message"))
    by_id("list-sessions").click()
    until("the session in the list", lambda: len(css("#session-list li")) >= 1)
    css("#session-list li button")[0].click()
    until("the session reopened", lambda: len(css(".message.assistant")) == 2 and css(".message.assistant a.cite"))
    reopened = css(".message.assistant")[0]
    assert css(".rate.up", reopened)[0].get_attribute("aria-pressed") == "true", "the rating is not shown again"
    assert css("table", reopened), "the reopened reply is not rendered"
    shot("6-sessions")

    notes = Path(workdir) / "zebra-protocol.md"
    notes.write_text("# Zebra protocol\n\nThe zebra protocol says every stand-up ends after nine minutes.\n")
    by_id("file").send_keys(str(notes))
    by_id("upload").click()
    until("the upload to be ready", lambda: by_id("upload-status").get_attribute("data-status") == "ready", 240)
    until("the document listed", lambda: "zebra-protocol.md: ready" in by_id("document-list").text)
    shot("7-upload")

    by_id("new-session").click()
    ask("What does the zebra protocol say about stand-ups?")
    until("the upload cited", lambda: "zebra-protocol.md" in by_id("sources").text)
    shot("8-cited")


def main():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        reason = "browser test skipped: no chromium and chromedriver (Debian: apt-get install chromium chromium-driver)"
        print(reason)
        return 1 if os.environ.get("COACH_REQUIRE_BROWSER") == "1" else 0

    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()
    # Selenium must never try to download a driver or a browser.
    os.environ["SE_OFFLINE"] = "true"
    log_path = SHOTS / "stack.log"
    driver = None
    try:
        with fake_model(SHOTS / "model.log") as model, local_stack(log_path, model) as (base, token, web, workdir):
            driver = browser(chromium, chromedriver)
            drive(driver, f"http://127.0.0.1:{web}/", workdir, base, token)
    except Exception:
        print(f"playground: failed; the stack's log is {log_path}", file=sys.stderr)
        raise
    finally:
        if driver is not None:
            driver.quit()
    print(f"playground: passed; screenshots in {SHOTS.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
