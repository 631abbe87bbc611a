#!/usr/bin/env python3
"""A short, bounded load test of a running local stack (`make dev`), on loopback only.

Sends a fixed number of requests (default 200) with a few in flight at once (default 4) to
GET /health and POST /chat (the `none` provider unless the stack was started otherwise)
after one warm-up request of each, stops early after --max-seconds, and prints the error rate and latency percentiles. 429s from
Coach's rate limiter are counted apart (start the stack with COACH_RATE_LIMIT_USER=0 to measure
without it). Exits 1 when the error rate (other than 429) is above --max-error-rate.

    python3 scripts/loadtest.py --token "$TOKEN"

With --documents and --turns it is a volume test instead: the stack as a team tries it. It
adds that many generated Markdown documents (`POST /documents`, a few at a time), waits until
ingest has made every one ready, then holds that many chat turns, one client, one request at
a time, in sessions of five (a question and four follow-ups). It prints the documents' and the
turns' outcomes and latency by thousand, and exits 1 on any 5xx (the emulator's storage
"unavailable" 503 among them) or a document that failed:

    COACH_RATE_LIMIT_USER=0 COACH_RATE_LIMIT_TENANT=0 make dev
    python3 scripts/loadtest.py --token "$TOKEN" --documents 5000 --turns 2000

(It stops, saying so, at the first 429 from the rate limiter.)

Standard library only. Refuses any base URL that is not on 127.0.0.1 or localhost.
"""
import argparse
import json
import random
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def one(base, token, i, deadline):
    if time.monotonic() > deadline:
        return None
    if i % 2 == 0:
        req = urllib.request.Request(f"{base}/chat/health")
    else:
        body = json.dumps({"message": f"How do I give feedback? ({i})"}).encode()
        req = urllib.request.Request(f"{base}/chat/chat", data=body, method="POST")
        req.add_header("content-type", "application/json")
        req.add_header("authorization", f"Bearer {token}")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status = resp.status
    except urllib.error.HTTPError as e:
        status = e.code
    except Exception as e:  # connection refused or reset, timeout
        print(f"loadtest: request {i}: {type(e).__name__}: {e}", file=sys.stderr)
        status = 0
    return status, (time.perf_counter() - started) * 1000


def call(method, url, token, body=None, timeout=60):
    """One JSON request: (status, parsed body or None, ms)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("content-type", "application/json")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except Exception as e:  # connection refused or reset, timeout
        print(f"loadtest: {method} {url}: {type(e).__name__}: {e}", file=sys.stderr)
        status, raw = 0, b""
    ms = (time.perf_counter() - started) * 1000
    try:
        return status, json.loads(raw) if raw else None, ms
    except ValueError:
        return status, None, ms


# Words of the generated documents: a handbook's vocabulary, so that questions match some.
WORDS = (
    "team feedback meeting project deadline budget review plan goal hiring onboarding policy "
    "customer contract security incident release quality process training mentor career salary "
    "leave holiday travel expense report quarter roadmap design research support escalation risk "
    "compliance audit vendor invoice payment schedule priority decision owner handover retrospective "
    "standup sprint estimate scope change request approval manager engineer analyst director "
    "office remote equipment laptop access password account data privacy retention backup recovery"
).split()


def document(i):
    """The i-th generated document: a title, three sections of a few sentences each."""
    rng = random.Random(i)
    sentence = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize() + "."
    title = " ".join(rng.choice(WORDS) for _ in range(3)).title()
    sections = [f"## {rng.choice(WORDS).title()} {rng.choice(WORDS)}\n\n" + " ".join(sentence() for _ in range(6))
                for _ in range(3)]
    return f"doc-{i:05}.md", f"# {title} {i}\n\n" + "\n\n".join(sections) + "\n"


def by_thousand(samples):
    """p50/p99 of each thousand samples, in order: whether latency grows with the data."""
    rows = []
    for start in range(0, len(samples), 1000):
        part = samples[start:start + 1000]
        rows.append({"from": start + 1, "to": start + len(part), "p50_ms": round(percentile(part, 50), 1),
                     "p99_ms": round(percentile(part, 99), 1)})
    return rows


def volume(args):
    """The volume test (see the module's description); its exit status."""
    base, token = args.base, args.token
    started = time.monotonic()
    statuses, latencies, ids = {}, [], []

    limited = []

    def add(i):
        if limited:  # the volume is the point, not the rate limiter: stop adding
            return 429, None, 0.0
        name, text = document(i)
        body = {"filename": name, "content": text, "content_type": "text/markdown"}
        status, answer, ms = call("POST", f"{base}/upload-url/documents", token, body)
        if status == 429:
            limited.append(i)
        return status, answer, ms

    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        for status, answer, ms in pool.map(add, range(args.documents)):
            statuses[status] = statuses.get(status, 0) + 1
            latencies.append(ms)
            if status in (200, 201, 202) and answer:
                ids.append(answer.get("document_id"))
    added = time.monotonic() - started
    if limited:
        print(f"loadtest: rate limited at document {limited[0] + 1}; start the stack with "
              "COACH_RATE_LIMIT_USER=0 COACH_RATE_LIMIT_TENANT=0", file=sys.stderr)
        return 2
    print(json.dumps({"documents_added": len(ids), "statuses": statuses, "seconds": round(added, 1),
                      "by_thousand": by_thousand(latencies)}), flush=True)

    # Ready, all of them: the listing counts each status (newest first, pages of 100).
    waited, counts = time.monotonic(), {}
    while time.monotonic() - waited < args.ingest_timeout:
        counts, cursor = {}, None
        while True:
            url = f"{base}/upload-url/documents?limit=100" + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else "")
            status, page, _ = call("GET", url, token)
            if status != 200:
                counts[f"list HTTP {status}"] = counts.get(f"list HTTP {status}", 0) + 1
                break
            for doc in page.get("documents", []):
                counts[doc.get("status")] = counts.get(doc.get("status"), 0) + 1
            cursor = page.get("next_cursor")
            if not cursor:
                break
        print(json.dumps({"ingest": counts, "seconds": round(time.monotonic() - waited, 1)}), flush=True)
        if counts.get("ready", 0) + counts.get("failed", 0) >= len(ids) and not any(k.startswith("list") for k in counts):
            break
        time.sleep(10)

    # The turns: one client, one at a time, sessions of five.
    turns, session = {}, None
    turn_latencies = []
    for i in range(args.turns):
        rng = random.Random(100_000 + i)
        if i % 5 == 0:
            session = None
            message = f"What does the policy say about {rng.choice(WORDS)} and {rng.choice(WORDS)}?"
        else:
            message = rng.choice(["And if they disagree?", "Who decides that?", "What about remote teams?",
                                  f"How does that change for {rng.choice(WORDS)}?"])
        body = {"message": message, **({"session_id": session} if session else {})}
        status, answer, ms = call("POST", f"{base}/chat/chat", token, body)
        turns[status] = turns.get(status, 0) + 1
        turn_latencies.append(ms)
        if status == 200 and answer:
            session = answer.get("session_id")
        elif status >= 500 or status == 0:
            print(f"loadtest: turn {i + 1}: HTTP {status} {json.dumps(answer)[:300]}", file=sys.stderr)
    print(json.dumps({"turns": args.turns, "statuses": turns, "by_thousand": by_thousand(turn_latencies),
                      "minutes_in_all": round((time.monotonic() - started) / 60, 1)}), flush=True)
    server_errors = sum(n for s, n in {**statuses, **turns}.items() if s == 0 or s >= 500)
    failed = counts.get("failed", 0)
    not_ready = len(ids) - counts.get("ready", 0) - failed
    ok = server_errors == 0 and failed == 0 and not_ready == 0 and len(ids) == args.documents
    print(json.dumps({"server_errors": server_errors, "documents_failed": failed,
                      "documents_not_ready": not_ready, "passed": ok}))
    return 0 if ok else 1


def percentile(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="http://127.0.0.1:9000/lambda-url")
    parser.add_argument("--token", required=True)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=120)
    parser.add_argument("--max-error-rate", type=float, default=0.0)
    parser.add_argument("--documents", type=int, default=0, help="volume test: documents to add")
    parser.add_argument("--turns", type=int, default=0, help="volume test: chat turns after they are ready")
    parser.add_argument("--ingest-timeout", type=float, default=3600, help="volume test: longest wait for ingest, s")
    args = parser.parse_args()
    host = urllib.parse.urlparse(args.base).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"loadtest: refusing non-loopback base URL {args.base}")
    if not (1 <= args.requests <= 10000 and 1 <= args.concurrency <= 32):
        sys.exit("loadtest: --requests must be 1-10000 and --concurrency 1-32")
    if args.documents or args.turns:
        if not (0 <= args.documents <= 20000 and 0 <= args.turns <= 20000):
            sys.exit("loadtest: --documents and --turns must be 0-20000")
        sys.exit(volume(args))

    # Warm up first: under `cargo lambda watch` a function's first request starts its
    # process (and may compile it), which is not what this test measures.
    for i in range(2):
        status, _ = one(args.base, args.token, i, time.monotonic() + 600)
        if status not in (200, 429):
            sys.exit(f"loadtest: warm-up request got HTTP {status}; is `make dev` running and the token valid?")

    deadline = time.monotonic() + args.max_seconds
    results = []
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        futures = [pool.submit(one, args.base, args.token, i, deadline) for i in range(args.requests)]
        results = [r for r in (f.result() for f in futures) if r is not None]
    ok = [ms for status, ms in results if 200 <= status < 300]
    limited = [status for status, _ in results if status == 429]
    errors = [status for status, _ in results if not 200 <= status < 300 and status != 429]
    rate = len(errors) / len(results) if results else 1.0
    report = {
        "requests": len(results),
        "not_sent_after_deadline": args.requests - len(results),
        "concurrency": args.concurrency,
        "ok": len(ok),
        "rate_limited": len(limited),
        "errors": len(errors),
        "error_rate": round(rate, 4),
        "error_statuses": sorted(set(errors)),
        "p50_ms": round(percentile(ok, 50), 1),
        "p99_ms": round(percentile(ok, 99), 1),
    }
    print(json.dumps(report))
    sys.exit(0 if rate <= args.max_error_rate else 1)


if __name__ == "__main__":
    main()
