#!/usr/bin/env python3
"""Cold start of each Coach function, and of a Python stack, under a local Lambda Runtime API.

For every function: start the release binary as Lambda would (AWS_LAMBDA_RUNTIME_API and the
usual variables, AWS calls to moto on loopback), and measure

  init   process start -> its first `GET /runtime/invocation/next` (ready to serve)
  first  that first invocation: event handed over -> response received
  rss    peak resident memory after the first invocation (VmHWM)

over --runs fresh processes each, reporting the median (and min-max). `POST /chat` is also
measured with a language model: the OpenAI provider and the Amazon Bedrock one (its AWS SDK
client built at init), both against scripts/fake-llm.py on loopback. The Python stack
(scripts/bench/python_stack.py, when --python is given) is measured the same way in the same
run. Everything listens on and talks to 127.0.0.1 only. Prints a table, and writes JSON with
--json.

    scripts/bench/coldstart.py --bin-dir target/release --coach-dev target/debug/coach-dev \\
        --moto-server .venv/bin/coach-moto-server [--python .venv-bench/bin/python] [--runs 7] \\
        [--only chat]
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "/2018-06-01/runtime"


class Invocation:
    """What the runtime API saw of one process: when it asked for work, what it answered."""

    def __init__(self, event):
        self.event = event
        self.request_id = str(uuid.uuid4())
        self.lock = threading.Lock()
        self.next_calls = 0
        self.ready_at = None
        self.sent_at = None
        self.answered_at = None
        self.answer = None
        self.error = None
        self.posts = []
        self.done = threading.Event()
        self.stop = threading.Event()


class RuntimeApi(BaseHTTPRequestHandler):
    """The part of the Lambda Runtime API a function uses: next, response, error."""

    protocol_version = "HTTP/1.1"
    current = None  # the Invocation being measured

    def log_message(self, *args):
        pass

    def do_GET(self):
        inv = RuntimeApi.current
        if self.path != f"{PREFIX}/invocation/next" or inv is None:
            return self.reply(404, b'{"errorMessage":"not found"}')
        arrived = time.perf_counter()
        with inv.lock:
            inv.next_calls += 1
            first = inv.next_calls == 1
            if first:
                inv.ready_at = arrived
        if not first:
            # A second invocation never comes: the process is stopped after the first.
            inv.stop.wait(120)
            self.close_connection = True
            return
        body = inv.event
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Lambda-Runtime-Aws-Request-Id", inv.request_id)
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + DEADLINE_SECS * 1000))
        self.send_header(
            "Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:coach-bench"
        )
        self.send_header("Lambda-Runtime-Trace-Id", "Root=1-67a1b2c3-0123456789abcdef01234567;Sampled=0")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        inv.sent_at = time.perf_counter()

    def do_POST(self):
        inv = RuntimeApi.current
        body = self.read_body()
        now = time.perf_counter()
        if inv is not None:
            inv.posts.append(self.path)
        if inv is not None and self.path == f"{PREFIX}/invocation/{inv.request_id}/response":
            inv.answer, inv.answered_at = body, now
            inv.done.set()
        elif inv is not None and self.path.endswith("/error"):
            inv.error = body.decode("utf-8", "replace")
            inv.done.set()
        self.reply(202, b'{"status":"OK"}')

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A measured process is killed while its next request waits: a reset is expected.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, what):
    for _ in range(300):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"coldstart: {what} exited")
            time.sleep(0.1)
    sys.exit(f"coldstart: {what} did not start")


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def http_event(name, method, path, body, token):
    event = json.loads((ROOT / "events" / name).read_text())
    event["rawPath"] = path
    event["routeKey"] = f"{method} {path}"
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["http"]["path"] = path
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    event["headers"]["authorization"] = f"Bearer {token}"
    if body is None:
        event.pop("body", None)
        event["headers"].pop("content-type", None)
    else:
        event["body"] = json.dumps(body)
        event["headers"]["content-type"] = "application/json"
    event["headers"].pop("content-length", None)
    event["isBase64Encoded"] = False
    return event


def s3_event(name, bucket):
    event = json.loads((ROOT / "events" / name).read_text())
    for record in event["Records"]:
        record["s3"]["bucket"]["name"] = bucket
        record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    return event


# Longest wait for a started process's answer, in seconds (--start-timeout).
START_TIMEOUT = 20
# The invocation's time, as the Runtime API's deadline says it (--deadline).
DEADLINE_SECS = 30


def start_once(command, env, event, log):
    """One cold start: the sample, and the answer (None when the process gave none in time)."""
    inv = Invocation(json.dumps(event).encode())
    RuntimeApi.current = inv
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        if not inv.done.wait(START_TIMEOUT):
            seen = f"next calls {inv.next_calls}, event sent {inv.sent_at is not None}, posts {inv.posts}"
            print(f"coldstart: {command[-1]} gave no response in {START_TIMEOUT} s ({seen}); trying again",
                  file=sys.stderr)
            return None, None
        if inv.error is not None:
            sys.exit(f"coldstart: {command[-1]} reported an error: {inv.error[:500]}")
        rss = peak_rss_kib(proc.pid)
    finally:
        inv.stop.set()
        proc.kill()
        proc.wait()
    sample = {
        "init_ms": (inv.ready_at - started) * 1000,
        "first_ms": (inv.answered_at - inv.sent_at) * 1000,
        "rss_mib": rss / 1024,
    }
    return sample, inv.answer


def measure(command, env, event, runs, log):
    """Starts `command` `runs` times; returns the samples, the last answer and how many
    starts gave no answer in time (each is retried, at most `runs` times in all)."""
    samples, answer, lost = [], None, 0
    while len(samples) < runs:
        sample, reply = start_once(command, env, event, log)
        if sample is None:
            lost += 1
            if lost > runs:
                sys.exit(f"coldstart: {command[-1]} keeps giving no response (log: {log.name})")
            continue
        samples.append(sample)
        answer = reply
    return samples, answer, lost


def status_of(answer):
    """The HTTP status in an API Gateway (or streaming prelude) answer, if any."""
    text = answer.split(b"\x00" * 8)[0]
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value.get("statusCode") if isinstance(value, dict) else None


def summarise(name, measured, size):
    samples, answer, lost = measured
    row = {"name": name, "runs": len(samples), "lost": lost, "status": status_of(answer or b"")}
    for key in ("init_ms", "first_ms", "rss_mib"):
        values = [s[key] for s in samples]
        row[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    if size is not None:
        row["binary_mib"] = size / (1 << 20)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", default=str(ROOT / "target" / "release"))
    parser.add_argument("--coach-dev", default=str(ROOT / "target" / "debug" / "coach-dev"))
    parser.add_argument("--moto-server", default=str(ROOT / ".venv" / "bin" / "coach-moto-server"))
    parser.add_argument("--python", help="interpreter with the Python stack installed (skipped when absent)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--only", help="measure only the cases whose name contains this")
    parser.add_argument("--runner", help="a command to start each function under (qemu-user for another arch)")
    parser.add_argument("--start-timeout", type=float, default=20, help="longest wait for a start's answer, s")
    parser.add_argument("--deadline", type=int, default=30, help="each invocation's time, s (Lambda's timeout)")
    parser.add_argument("--no-times", action="store_true",
                        help="report each start's status only (under an emulator, times say nothing)")
    args = parser.parse_args()
    global START_TIMEOUT, DEADLINE_SECS
    START_TIMEOUT, DEADLINE_SECS = args.start_timeout, args.deadline
    if not 1 <= args.runs <= 100:
        sys.exit("coldstart: --runs must be 1-100")

    work = Path(tempfile.mkdtemp(prefix="coach-coldstart-"))
    log = open(work / "functions.log", "w")
    llm_port = free_port()
    llm = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "fake-llm.py"), "--port", str(llm_port)],
        stdout=open(work / "fake-llm.log", "w"),
        stderr=subprocess.STDOUT,
    )
    moto_port = free_port()
    moto = subprocess.Popen(
        [args.moto_server, "-H", "127.0.0.1", "-p", str(moto_port)],
        stdout=open(work / "moto.log", "w"),
        stderr=subprocess.STDOUT,
    )
    server = Server(("127.0.0.1", 0), RuntimeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        wait_for_port(moto_port, moto, "moto")
        wait_for_port(llm_port, llm, "fake-llm")
        aws = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "COACH_BUCKET": "coach-bench",
            "COACH_TABLE": "coach-bench",
            "COACH_SECRET_ID": "coach-bench",
            # Counted as usual (one DynamoDB update per request), never reached by the runs.
            "COACH_RATE_LIMIT_USER": "1000000",
            "COACH_RATE_LIMIT_TENANT": "1000000",
            # The default embedding provider, `local`: the model from scripts/model.sh, loaded
            # by the first embedding (so in the first call of ingest and of POST /chat).
            "COACH_EMBEDDING_MODEL_DIR": str(ROOT / "models" / "all-minilm-l6-v2"),
        }
        subprocess.run(
            [args.coach_dev, "setup", str(ROOT / "examples" / "docs")],
            env=aws,
            check=True,
            stdout=log,
            stderr=log,
        )
        token = subprocess.run(
            [args.coach_dev, "token", "--user", "bench", "--tenant", "dev", "--roles", "user,editor", "--ttl", "3600"],
            env=aws,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        lambda_env = {
            **aws,
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/coach-bench",
            "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
            "AWS_LAMBDA_LOG_LEVEL": "info",
        }
        question = {"message": "How do I give feedback to a teammate who keeps missing deadlines?"}
        # The same stand-in behind both providers: what differs is the client Coach builds.
        openai = {
            "COACH_LLM_PROVIDER": "openai",
            "COACH_LLM_MODEL": "gpt-4o-mini",
            "COACH_LLM_BASE_URL": f"http://127.0.0.1:{llm_port}/v1",
        }
        bedrock = {
            "COACH_LLM_PROVIDER": "bedrock",
            "COACH_LLM_MODEL": "anthropic.claude-3-5-haiku-20241022-v1:0",
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": f"http://127.0.0.1:{llm_port}",
        }
        upload = {"filename": "notes.md", "content_type": "text/markdown", "size_bytes": 1200}
        cases = [
            # Ingest first, so chat has an index to search.
            ("ingest", "ingest", s3_event("s3-put-doc.json", aws["COACH_BUCKET"])),
            ("docs-refresh", "docs-refresh", json.loads((ROOT / "events" / "schedule.json").read_text())),
            ("chat GET /health", "chat", http_event("chat-health.json", "GET", "/health", None, token)),
            ("chat POST /chat", "chat", http_event("chat-post.json", "POST", "/chat", question, token)),
            ("chat POST /chat, OpenAI", "chat", http_event("chat-post.json", "POST", "/chat", question, token), openai),
            ("chat POST /chat, Bedrock", "chat", http_event("chat-post.json", "POST", "/chat", question, token), bedrock),
            (
                "chat-stream POST /chat/stream",
                "chat-stream",
                http_event("chat-stream.json", "POST", "/chat/stream", question, token),
            ),
            ("upload-url POST /uploads", "upload-url", http_event("uploads-create.json", "POST", "/uploads", upload, token)),
        ]
        if args.runner:
            # Ingest starts its extraction child as a program of its own: under the runner too
            # (an emulated process cannot start another arch's binary itself), with room for
            # the emulator in the child's address-space limit.
            wrapper = work / "extract-under-runner"
            wrapper.write_text(f'#!/bin/sh\nexec {args.runner} {Path(args.bin_dir).resolve() / "ingest"} "$@"\n')
            wrapper.chmod(0o755)
            lambda_env = {**lambda_env, "COACH_EXTRACT_PROGRAM": str(wrapper), "COACH_EXTRACT_MEMORY_MB": "8192"}
        rows = []
        for name, binary, event, *extra in cases:
            if args.only and args.only not in name:
                continue
            path = Path(args.bin_dir) / binary
            env = {**lambda_env, "AWS_LAMBDA_FUNCTION_NAME": binary, **(extra[0] if extra else {})}
            command = (args.runner.split() if args.runner else []) + [str(path)]
            rows.append(summarise(name, measure(command, env, event, args.runs, log), path.stat().st_size))
        if args.python:
            script = ROOT / "scripts" / "bench" / "python_stack.py"
            env = {**lambda_env, "AWS_LAMBDA_FUNCTION_NAME": "python-stack"}
            event = http_event("chat-health.json", "GET", "/health", None, token)
            # One unmeasured start compiles the stack's .pyc files, as a deployment package ships them.
            measure([args.python, str(script)], env, event, 1, log)
            measured = measure([args.python, str(script)], env, event, args.runs, log)
            rows.append(summarise("python stack GET /health", measured, None))
    finally:
        server.shutdown()
        for child in (moto, llm):
            child.kill()
            child.wait()
        log.close()

    if args.no_times:
        print(f"cold start under {args.runner or 'no runner'}, {args.runs} start(s) each; log: {work / 'functions.log'}")
        for row in rows:
            status = row["status"] if row["status"] is not None else "answered (not HTTP)"
            print(f"{row['name']:<32} {status}")
    else:
        print_times(rows, args, work)
    lost = sum(row["lost"] for row in rows)
    if lost:
        print(f"({lost} start(s) gave no response within {START_TIMEOUT:.0f} s and were run again; see stderr)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    bad = [r["name"] for r in rows if r["status"] is not None and not 200 <= r["status"] < 300]
    if bad:
        sys.exit(f"coldstart: these answered with an error status: {', '.join(bad)}")


def print_times(rows, args, work):
    print(f"cold start, median of {args.runs} runs (min-max); log: {work / 'functions.log'}")
    print(f"{'function':<32} {'status':>6} {'init ms':>18} {'first call ms':>20} {'peak RSS MiB':>18} {'binary MiB':>10}")
    for row in rows:
        cell = lambda k, f: f"{row[k]['median']:{f}} ({row[k]['min']:.0f}-{row[k]['max']:.0f})"
        size = f"{row['binary_mib']:.1f}" if "binary_mib" in row else "-"
        status = row["status"] if row["status"] is not None else "-"
        print(
            f"{row['name']:<32} {status:>6} {cell('init_ms', '.1f'):>18} {cell('first_ms', '.1f'):>20} "
            f"{cell('rss_mib', '.1f'):>18} {size:>10}"
        )


if __name__ == "__main__":
    main()
