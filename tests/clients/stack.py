"""The local stack the client tests drive: `scripts/dev.sh` (moto, the example docs, `cargo
lambda watch`) with the stand-in OpenAI-compatible model (`scripts/fake-llm.py`, dated model
names and usage as OpenAI answers), both on free loopback ports, stopped at the end whatever
happened. Logs go to target/clients/{name}-stack.log and {name}-model.log."""

import contextlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "browser"))
from playground import fake_model, free_port, local_stack, request, stop, wait_for  # noqa: E402,F401

LOGS = ROOT / "target" / "clients"


def check(condition, what):
    if not condition:
        raise AssertionError(what)


@contextlib.contextmanager
def stack_with_model(name):
    """Yields (the functions' base URL, the dev token) once the example docs are indexed."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{name}-stack.log"
    try:
        with fake_model(LOGS / f"{name}-model.log") as model_env, local_stack(log_path, model_env) as (base, token, _, _):
            yield base, token
    except Exception:
        print(f"{name}: failed; the stack's log is {log_path}", file=sys.stderr)
        raise
