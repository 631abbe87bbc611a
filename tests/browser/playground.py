"""The playground page (web/) in a real headless Chromium, against the local stack.

Starts `scripts/dev.sh` (moto, the example docs, `cargo lambda watch`, the page's server) on
free loopback ports in a directory of its own, waits until the example docs are indexed,
then drives Debian's `chromium` through `chromedriver` with Selenium: the page loads, the dev
token is fetched, a streamed chat answer shows its sources, the session is listed, an upload
reaches `ready` and is then cited. Screenshots of each step go to target/playground/. Stops
the stack (its whole process group) at the end, whatever happened.

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


def browser(chromium, chromedriver):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1100", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)


def drive(driver, page, workdir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def by_id(name):
        return driver.find_element(By.ID, name)

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
        answers = len(driver.find_elements(By.CSS_SELECTOR, ".message.assistant"))
        by_id("message").send_keys(question)
        by_id("send").click()
        until("an answer", lambda: len(driver.find_elements(By.CSS_SELECTOR, ".message.assistant")) > answers
              and "answered by" in by_id("chat-status").text)
        return driver.find_elements(By.CSS_SELECTOR, ".message.assistant p")[-1].text

    driver.get(page)
    until("the page", lambda: driver.title == "Coach playground")
    until("the stack's addresses from dev.json", lambda: "/lambda-url/chat" in by_id("chat-url").get_attribute("value"))
    shot("1-loaded")

    by_id("fetch-token").click()
    until("the dev token", lambda: by_id("identity").text == "dev token loaded")
    by_id("whoami").click()
    until("the caller", lambda: by_id("identity").text.startswith("dev-user of dev"))

    answer = ask("How do I give useful feedback to a colleague?")
    assert answer.strip(), "the streamed answer is empty"
    sources = [s.text for s in driver.find_elements(By.CSS_SELECTOR, "#sources li")]
    assert sources, "no sources shown"
    assert by_id("session-label").text.startswith("session "), by_id("session-label").text
    shot("2-chat")

    by_id("list-sessions").click()
    until("the session in the list", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#session-list li")) >= 1)
    shot("3-sessions")

    notes = Path(workdir) / "zebra-protocol.md"
    notes.write_text("# Zebra protocol\n\nThe zebra protocol says every stand-up ends after nine minutes.\n")
    by_id("file").send_keys(str(notes))
    by_id("upload").click()
    until("the upload to be ready", lambda: by_id("upload-status").get_attribute("data-status") == "ready", 240)
    until("the document listed", lambda: "zebra-protocol.md: ready" in by_id("document-list").text)
    shot("4-upload")

    by_id("new-session").click()
    ask("What does the zebra protocol say about stand-ups?")
    until("the upload cited", lambda: "zebra-protocol.md" in by_id("sources").text)
    shot("5-cited")


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
        with local_stack(log_path) as (_, _, web, workdir):
            driver = browser(chromium, chromedriver)
            drive(driver, f"http://127.0.0.1:{web}/", workdir)
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
