#!/usr/bin/env python3
"""A stand-in OpenAI-compatible chat completions server (and Amazon Bedrock Converse
runtime) for trying Coach locally offline.

It is not a language model: it answers every request with a short canned reply that
quotes the last user message and says how many turns it received, so a multi-turn
conversation, history and streaming can be watched end to end. Plain and streaming
(`"stream": true`, Server-Sent Events, word by word) replies, with usage, and
`POST /v1/embeddings` (deterministic vectors from the words of each text).

Like the real API it answers under a dated model name: `gpt-4o-mini` is served as
`gpt-4o-mini-2024-07-18`, and any other undated name gets the same date, so the usage
ledger and budgets are exercised as with OpenAI itself.

    python3 scripts/fake-llm.py --port 5060
    COACH_LLM_PROVIDER=openai COACH_LLM_BASE_URL=http://127.0.0.1:5060/v1 make dev

It also answers Amazon Bedrock's Converse (`POST /model/{id}/converse`), ConverseStream
(`POST /model/{id}/converse-stream`, in the event-stream framing the AWS SDK reads: each
event a binary message with its headers and CRC32s), with the usage Bedrock reports, and
Titan Text Embeddings v2 and Cohere Embed v3 and v4 (`POST /model/{id}/invoke`):

    COACH_LLM_PROVIDER=bedrock COACH_LLM_MODEL=amazon.nova-lite-v1:0 \
      AWS_ENDPOINT_URL_BEDROCK_RUNTIME=http://127.0.0.1:5060 make dev

Listens on 127.0.0.1 only. Standard library only.
"""
import argparse
import hashlib
import json
import math
import re
import struct
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


# The reference material Coach puts before the question (prompt.rs `fenced`), and its
# numbered passages' label lines.
REFERENCE = re.compile(r"\A<<<REFERENCE (\S+)\n(.*?)REFERENCE \1>>>\s*(.*)\Z", re.S)
PASSAGE = re.compile(r"^\[(\d+)\] (.+)$", re.M)


def reply_for(body):
    messages = body.get("messages", [])
    last = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    turns = sum(1 for m in messages if m.get("role") in ("user", "assistant"))
    reference = REFERENCE.match(last)
    question = reference.group(3) if reference else last
    text = (f'(fake-llm) You said: "{question[:200]}". I received {turns} turn(s) of conversation '
            f"and a system prompt of {len(messages[0]['content']) if messages else 0} characters.")
    passages = PASSAGE.findall(reference.group(2)) if reference else []
    if passages:
        text += cited(passages)
    prompt_tokens = sum(len(m.get("content", "")) for m in messages) // 4
    return text, prompt_tokens


def cited(passages):
    """Markdown as models write it when told to cite numbered passages: emphasis, a list and
    a table, each passage cited by its number ([n])."""
    items = "\n".join(f"{i}. **{title}** is passage [{n}]." for i, (n, title) in enumerate(passages, 1))
    rows = "\n".join(f"| [{n}] | {title.replace('|', chr(92) + '|')} |" for n, title in passages)
    return (f"\n\nThe passages I was given, *in the order Coach ranked them*:\n\n{items}\n\n"
            f"| Passage | Title |\n| --- | --- |\n{rows}\n\nA stand-in wrote this; the `fake-llm` server reads no passage.")


# What OpenAI serves for an undated model name.
SERVED = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06",
          "text-embedding-ada-002": "text-embedding-ada-002-v2"}
DATED = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|v\d+)$")


def served(model):
    """The name the answer carries: OpenAI's for its models, else the name with a date."""
    if model in SERVED:
        return SERVED[model]
    return model if DATED.search(model) else f"{model}-2024-07-18"


def vector(text, dims=384):
    """A unit vector from the words of `text`: texts sharing words are close."""
    v = [0.0] * dims
    for word in re.findall(r"\w+", text.lower()):
        h = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "big")
        v[h % dims] += 1.0 if (h >> 32) & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]


def converse_reply(body):
    """A Converse request's reply text and input tokens (its content blocks read as text)."""
    text_of = lambda blocks: "".join(b.get("text", "") for b in blocks or [])
    messages = [{"role": m.get("role"), "content": text_of(m.get("content"))} for m in body.get("messages", [])]
    system = text_of(body.get("system"))
    return reply_for({"messages": [{"role": "system", "content": system}] + messages})


def event_frame(event_type, payload, message_type="event"):
    """One message of the event-stream framing: prelude (total and headers lengths, CRC32),
    string headers, the JSON payload, CRC32 of it all."""
    headers = b""
    for name, value in ((":event-type" if message_type == "event" else ":exception-type", event_type),
                        (":content-type", "application/json"), (":message-type", message_type)):
        headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()
    data = json.dumps(payload).encode()
    total = 12 + len(headers) + len(data) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + headers + data
    return message + struct.pack(">I", zlib.crc32(message))


class Handler(BaseHTTPRequestHandler):
    def send_json(self, payload):
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        path = self.path.rstrip("/")
        if path.endswith("/embeddings"):
            texts = body.get("input", [])
            texts = [texts] if isinstance(texts, str) else texts
            tokens = sum(len(t) // 4 + 1 for t in texts)
            self.send_json({"object": "list", "model": served(body.get("model", "fake-embedding")),
                            "data": [{"object": "embedding", "index": i, "embedding": vector(t)}
                                     for i, t in enumerate(texts)],
                            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
            return
        if path.startswith("/model/") and path.endswith("/invoke") and "cohere.embed" in path:
            # Cohere Embed on Bedrock: up to 96 texts; v4 answers by type when asked.
            texts = body.get("texts", [])
            by_type = "embedding_types" in body
            dims = int(body.get("output_dimension", 1536 if by_type else 1024))
            vectors = [vector(t, dims) for t in texts]
            self.send_json({"id": "fake-embed", "texts": texts,
                            "response_type": "embeddings_by_type" if by_type else "embeddings_floats",
                            "embeddings": {"float": vectors} if by_type else vectors})
            return
        if path.startswith("/model/") and path.endswith("/invoke"):
            # Titan Text Embeddings v2 on Bedrock: one text, its vector and token count.
            text = body.get("inputText", "")
            self.send_json({"embedding": vector(text, int(body.get("dimensions", 1024))),
                            "inputTextTokenCount": len(text) // 4 + 1})
            return
        if path.startswith("/model/") and path.endswith("/converse"):
            text, input_tokens = converse_reply(body)
            output_tokens = len(text) // 4
            self.send_json({"output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                            "stopReason": "end_turn", "metrics": {"latencyMs": 30},
                            "usage": {"inputTokens": input_tokens, "outputTokens": output_tokens,
                                      "totalTokens": input_tokens + output_tokens}})
            return
        if path.startswith("/model/") and path.endswith("/converse-stream"):
            text, input_tokens = converse_reply(body)
            self.send_response(200)
            self.send_header("content-type", "application/vnd.amazon.eventstream")
            self.end_headers()
            events = [("messageStart", {"role": "assistant"})]
            for i, word in enumerate(text.split(" ")):
                events.append(("contentBlockDelta",
                               {"contentBlockIndex": 0, "delta": {"text": word if i == 0 else " " + word}}))
            output_tokens = len(text) // 4
            events += [("contentBlockStop", {"contentBlockIndex": 0}), ("messageStop", {"stopReason": "end_turn"}),
                       ("metadata", {"usage": {"inputTokens": input_tokens, "outputTokens": output_tokens,
                                               "totalTokens": input_tokens + output_tokens},
                                     "metrics": {"latencyMs": 30}})]
            for name, payload in events:
                self.wfile.write(event_frame(name, payload))
                self.wfile.flush()
                if name == "contentBlockDelta":
                    time.sleep(0.03)
            return
        if not path.endswith("/chat/completions"):
            self.send_error(404)
            return
        text, prompt_tokens = reply_for(body)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(text) // 4}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        model = served(body.get("model", "fake"))
        if not body.get("stream"):
            self.send_json({
                "id": "fake-1", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": usage,
            })
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        words = text.split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            chunk = {"id": "fake-1", "object": "chat.completion.chunk", "model": model,
                     "choices": [{"index": 0, "delta": {"content": piece}}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.03)
        # With stream_options.include_usage, a last chunk with no choices carries the usage.
        final = {"id": "fake-1", "object": "chat.completion.chunk", "model": model, "choices": [], "usage": usage}
        self.wfile.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())
        self.wfile.flush()

    def log_message(self, fmt, *args):  # keep the terminal quiet
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=5060)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"fake-llm: OpenAI-compatible stand-in on http://127.0.0.1:{args.port}/v1")
    server.serve_forever()


if __name__ == "__main__":
    main()
