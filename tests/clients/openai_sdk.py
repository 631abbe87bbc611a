"""The official OpenAI Python SDK against Coach's OpenAI-compatible API, on the local stack.

Starts the stand-in OpenAI-compatible model (`scripts/fake-llm.py`, dated model names and
usage as OpenAI answers) and `scripts/dev.sh` (moto, the example docs, `cargo lambda watch`)
on free loopback ports, waits until the example docs are indexed, creates an API key with
the dev token, then drives `openai.OpenAI` as a team's client would, through the streaming
Function URL (`/lambda-url/chat-stream/v1`) and the HTTP API's function (`/lambda-url/chat/v1`):
the model list and one model, a whole completion (with its numbered sources and the `sources` field), a
streamed one (usage in the last chunk), and the SDK's exceptions for a bad key
(AuthenticationError), an unknown model (NotFoundError, as OpenAI answers one) and a spent rate limit
(RateLimitError). Stops everything at the end, whatever happened.

    .venv/bin/python tests/clients/openai_sdk.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import check, request, stack_with_model  # noqa: E402

# More requests than a user may make a minute (COACH_RATE_LIMIT_USER's default, 30).
PAST_THE_RATE_LIMIT = 40


def drive(base, token):
    import openai

    status, created = request(f"{base}/chat/api-keys", {"name": "openai-sdk", "roles": ["user"]}, token)
    check(status == 201 and created["key"].startswith("coach_"), f"an API key: {status} {created}")
    key = created["key"]

    streaming = openai.OpenAI(base_url=f"{base}/chat-stream/v1", api_key=key, max_retries=0, timeout=120)
    http_api = openai.OpenAI(base_url=f"{base}/chat/v1", api_key=key, max_retries=0, timeout=120)

    ids = [m.id for m in streaming.models.list()]
    check(ids[0] == "coach", f"the model list: {ids}")
    check(http_api.models.retrieve("coach").id == "coach", "GET /v1/models/coach")

    question = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "How do I give useful feedback to a colleague?"},
    ]
    for client in (streaming, http_api):
        completion = client.chat.completions.create(model="coach", messages=question, max_tokens=200)
        content = completion.choices[0].message.content
        check(completion.model == "coach" and completion.choices[0].finish_reason == "stop", completion)
        check("\n\nSources:\n[1] " in content, f"numbered sources in the answer: {content!r}")
        sources = (completion.model_extra or {}).get("sources")
        check(sources and sources[0]["title"], f"the sources field: {completion.model_extra}")
        check(completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens,
              completion.usage)
    print("openai-sdk: models listed, whole completions through both URLs")

    follow_up = question + [
        {"role": "assistant", "content": "Be specific about the behaviour."},
        {"role": "user", "content": "And if they disagree?"},
    ]
    for client in (streaming, http_api):
        stream = client.chat.completions.create(
            model="coach", messages=follow_up, stream=True, stream_options={"include_usage": True})
        pieces, usage, finished, sources = [], None, None, None
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
                if choice.finish_reason:
                    finished = choice.finish_reason
                    sources = (chunk.model_extra or {}).get("sources")
        text = "".join(pieces)
        check(finished == "stop" and text.strip(), f"a streamed answer: {finished!r} {text!r}")
        check("\n\nSources:\n[1] " in text and sources, f"streamed sources: {text!r} {sources}")
        check(usage is not None and usage.completion_tokens > 0, f"usage in the last chunk: {usage}")
    print("openai-sdk: streamed completions with usage in the last chunk")

    try:
        openai.OpenAI(base_url=f"{base}/chat-stream/v1", api_key="coach_" + "0" * 26 + "_" + "0" * 64,
                      max_retries=0).models.list()
        raise AssertionError("a bad key was accepted")
    except openai.AuthenticationError as e:
        check(e.status_code == 401 and e.body.get("type") == "authentication_error", e.body)
    try:
        streaming.chat.completions.create(model="no-such-model", messages=question)
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as e:
        check(e.status_code == 404 and e.body.get("param") == "model" and e.code == "model_not_found", e.body)
    try:
        for _ in range(PAST_THE_RATE_LIMIT):
            http_api.chat.completions.create(model="coach", messages=question, max_tokens=20)
        raise AssertionError("the rate limit never answered")
    except openai.RateLimitError as e:
        check(e.status_code == 429 and e.response.headers.get("retry-after"), e.body)
    print("openai-sdk: AuthenticationError, NotFoundError, RateLimitError")


def main():
    with stack_with_model("openai-sdk") as (base, token):
        drive(base, token)
    print("openai-sdk: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
