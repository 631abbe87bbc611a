"""schemathesis hooks of the contract run (tests/clients/contract.py), each for a reason.

Every body goes as UTF-8: `cargo lambda watch`, the local stand-in for API Gateway, answers
500 to a body that is not, before Coach sees it; a malformed body the fuzzer writes in other
bytes is sent as its UTF-8 reading (still malformed, so still refused). Coach's own event
tests cover non-UTF-8 and base64-encoded bodies as API Gateway delivers them
(tests/tests/it/events.rs).

A case the fuzzer generates as valid by the document is kept valid where the document states
a rule JSON Schema cannot (the case is changed to follow it; cases generated as invalid are
sent as they are):
- no `cursor`: a cursor is a token Coach hands out (`next_cursor`), any other value is a
  400 no schema can tell apart from one it handed out (forged cursors are Coach's own tests');
- a date range within the route's limit (`/usage` 92 days, `/audit` 366, `to` not before
  `from`), or the defaults;
- an upload's file name whose extension does not contradict its `content_type`;
- a completion request for a model the deployment offers (`coach`), its last message the
  user's.
"""

import datetime

import schemathesis

# The longest range each route answers, in days (see openapi.yaml).
RANGES = {"/usage": 92, "/audit": 366}


def positive(case):
    """Whether schemathesis generated `case` as valid by the document."""
    meta = getattr(case, "_meta", None)
    mode = getattr(getattr(meta, "generation", None), "mode", None)
    return str(getattr(mode, "value", mode)).lower() == "positive"


@schemathesis.hook
def before_call(context, case, kwargs):
    # UTF-8 bodies only (see above).
    if isinstance(case.body, (bytes, bytearray)):
        try:
            bytes(case.body).decode("utf-8")
        except UnicodeDecodeError:
            case.body = bytes(case.body).decode("utf-8", errors="replace").encode("utf-8")
    if not positive(case):
        return
    query = case.query if isinstance(case.query, dict) else None
    if query is not None:
        # No cursor Coach did not hand out.
        query.pop("cursor", None)
        days = RANGES.get(case.operation.path)
        if days is not None and not in_range(query.get("from"), query.get("to"), days, case.operation.path):
            query.pop("from", None)
            query.pop("to", None)
    body = case.body if isinstance(case.body, dict) else None
    if body is not None and not filename_fits(body):
        body["filename"] = "document"
    if body is not None and case.operation.path == "/v1/chat/completions":
        # A model the deployment offers (`GET /v1/models`: a list of the deployment's, not
        # the document's); another is a 404, as OpenAI answers it.
        body["model"] = "coach"
        # "The last message (other than system ones) is the user's": a rule across items.
        messages = body.get("messages")
        if isinstance(messages, list):
            messages.append({"role": "user", "content": "How do I give feedback?"})


# The extensions that name a type (shared/src/model/mod.rs, `Kind::from_filename`).
EXTENSIONS = {"pdf": "application/pdf", "txt": "text/plain", "text": "text/plain", "md": "text/markdown",
              "markdown": "text/markdown", "html": "text/html", "htm": "text/html", "csv": "text/csv",
              "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document"}


def filename_fits(body):
    """Whether `body`'s file name has no extension, or one its `content_type` allows."""
    if not isinstance(body.get("filename"), str):
        return True
    if not isinstance(body.get("content_type"), str):
        return True
    # As Coach cleans a file name (`safe_filename`) before reading its extension.
    base = body["filename"].replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(c if c.isalnum() or c in ".-_ ()" else "_" for c in base)
    name = " ".join(cleaned.split()).strip(". _")
    if "." not in name:
        return True
    named = EXTENSIONS.get(name.rsplit(".", 1)[1].lower())
    given = body["content_type"].split(";")[0].strip().lower().replace("text/x-markdown", "text/markdown")
    return named is None or named == given


def day(value):
    """The date a `from` or `to` names (a date, or an RFC 3339 time's date), if it parses."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.date.fromisoformat(value[:10])
    except ValueError:
        return None


def in_range(start, end, days, path):
    """Whether `from`..`to` (each with the route's default when absent) is within `days`."""
    today = datetime.datetime.now(datetime.timezone.utc).date()
    last = day(end) if end is not None else today
    if path == "/usage":
        first = day(start) if start is not None else today.replace(day=1)
    else:
        first = day(start) if start is not None else (last - datetime.timedelta(days=30))
    if first is None or last is None:
        return True  # not a date: a negative case, left to Coach to refuse
    return first <= last and (last - first).days < days
