"""The API contract, fuzzed: schemathesis (pinned in requirements-dev.txt), a fuzzer nobody
here wrote, runs every check it has against every operation of `openapi.yaml`, through the
local stack, each operation at the URL of the function that serves it (`x-coach-function`),
with the dev token (roles user, editor, admin, platform-admin).

It starts `scripts/dev.sh` on free loopback ports (rate limits off, so the fuzzer's hundreds
of requests a minute meet Coach's answers rather than 429s) and stops it at the end. Zero
failures is the bar: a request valid by the document is accepted, an invalid one refused with
a 4xx, no 5xx, every answer matches its schema, unknown methods answer 405.

Request bodies are generated as UTF-8: `cargo lambda watch` (the local stand-in for API
Gateway) answers 500 to a body that is not, before Coach sees it; Coach's own event tests
cover non-UTF-8 and base64-encoded bodies as API Gateway delivers them. What else the fuzzer
is kept from, and why, is in contract_hooks.py.

`cargo lambda watch` also, about once in a few thousand requests, answers a request with a
500 of its own (its problem document, `https://httpstatuses.com/500`) after the function
answered it (the function's log has the request with its status): a function whose only
failures are such 500s is fuzzed once more, and passes only if that run has none.

    .venv/bin/python tests/clients/contract.py [--max-examples N] [--seed N]
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import LOGS, ROOT, local_stack  # noqa: E402

# The functions with an HTTP API, each fuzzed at its own URL (ingest takes S3 events only).
FUNCTIONS = ("chat", "chat-stream", "upload-url", "docs-refresh")


def fuzz(base, token, function, args):
    """Runs schemathesis against `function`'s operations; its exit status."""
    report = LOGS / f"contract-{function}.xml"
    command = [
        str(ROOT / ".venv" / "bin" / "st"), "--no-color",
        "--config-file", str(ROOT / "tests" / "clients" / "schemathesis.toml"),
        "run", str(ROOT / "openapi.yaml"),
        "--url", f"{base}/{function}",
        "--include-by", f'/x-coach-function == "{function}"',
        "--header", f"Authorization: Bearer {token}",
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", str(args.max_examples),
        "--generation-codec", "utf-8",
        "--generation-deterministic",
        "--seed", str(args.seed),
        "--request-timeout", "180",
        "--workers", "1",
        "--report", "junit", "--report-junit-path", str(report),
    ]
    print(f"contract: {function} at {base}/{function}", flush=True)
    # The hooks (tests/clients/contract_hooks.py) say what the fuzzer is kept from, and why.
    env = dict(os.environ, SCHEMATHESIS_HOOKS="contract_hooks", PYTHONPATH=str(Path(__file__).resolve().parent))
    # Run in target/clients: schemathesis keeps its cache (the crashes it replays) in the
    # working directory, which is not the repository's to hold.
    run = subprocess.run(command, cwd=LOGS, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(run.stdout, flush=True)
    return run.returncode, run.stdout


# The problem document `cargo lambda watch` answers its own 500s with.
WATCH_500 = "https://httpstatuses.com/500"


def only_the_emulators(output):
    """Whether every failure a run reports is a 500 of `cargo lambda watch`'s own."""
    failures = [line.strip() for line in output.splitlines() if line.strip().startswith("❌ ST")]
    # The 5xx kinds (ST101 a server error; ST102 one for an undeclared request Content-Type)
    # and what a 500 without Coach's body also fails (undocumented status, content type).
    server = [f for f in failures if f.startswith(("❌ ST101", "❌ ST102", "❌ ST103", "❌ ST105"))]
    watch_500 = f'"type":"{WATCH_500}"' in output
    coach_500 = '"code":"internal_error"' in output
    return bool(failures) and len(server) == len(failures) and watch_500 and not coach_500


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=25)
    parser.add_argument("--seed", type=int, default=20261206)
    parser.add_argument("--only", choices=FUNCTIONS, help="fuzz one function's operations")
    args = parser.parse_args()
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / "contract-stack.log"
    quiet = {"COACH_RATE_LIMIT_USER": "0", "COACH_RATE_LIMIT_TENANT": "0"}
    failed = []
    try:
        with local_stack(log, quiet) as (base, token, _, _):
            for function in FUNCTIONS:
                if args.only and function != args.only:
                    continue
                status, output = fuzz(base, token, function, args)
                if status != 0 and only_the_emulators(output):
                    print(f"contract: {function}: only cargo lambda watch's own 500s; fuzzing it once more", flush=True)
                    status, output = fuzz(base, token, function, args)
                if status != 0:
                    failed.append(function)
    except Exception:
        print(f"contract: the stack failed; its log is {log}", file=sys.stderr)
        raise
    if failed:
        sys.exit(f"contract: failures in {', '.join(failed)} (reports in {LOGS}/contract-*.xml; stack log {log})")
    print("contract: passed")


if __name__ == "__main__":
    main()
