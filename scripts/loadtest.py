#!/usr/bin/env python3
"""A short, bounded load test of a running local stack (`make dev`), on loopback only.

Sends a fixed number of requests (default 200) with a few in flight at once (default 4) to
GET /health and POST /chat (the `none` provider unless the stack was started otherwise)
after one warm-up request of each, stops early after --max-seconds, and prints the error rate and latency percentiles. 429s from
Coach's rate limiter are counted apart (start the stack with COACH_RATE_LIMIT_USER=0 to measure
without it). Exits 1 when the error rate (other than 429) is above --max-error-rate.

    python3 scripts/loadtest.py --token "$TOKEN"

Standard library only. Refuses any base URL that is not on 127.0.0.1 or localhost.
"""
import argparse
import json
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
    args = parser.parse_args()
    host = urllib.parse.urlparse(args.base).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"loadtest: refusing non-loopback base URL {args.base}")
    if not (1 <= args.requests <= 10000 and 1 <= args.concurrency <= 32):
        sys.exit("loadtest: --requests must be 1-10000 and --concurrency 1-32")

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
