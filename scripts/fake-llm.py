#!/usr/bin/env python3
"""A stand-in OpenAI-compatible chat completions server for trying Coach locally offline.

It is not a language model: it answers every request with a short canned reply that
quotes the last user message and says how many turns it received, so a multi-turn
conversation, history and streaming can be watched end to end. Plain and streaming
(`"stream": true`, Server-Sent Events, word by word) replies, with usage.

    python3 scripts/fake-llm.py --port 5060
    COACH_LLM_PROVIDER=openai COACH_LLM_BASE_URL=http://127.0.0.1:5060/v1 make dev

Listens on 127.0.0.1 only. Standard library only.
"""
import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def reply_for(body):
    messages = body.get("messages", [])
    last = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    turns = sum(1 for m in messages if m.get("role") in ("user", "assistant"))
    text = (f'(fake-llm) You said: "{last[:200]}". I received {turns} turn(s) of conversation '
            f"and a system prompt of {len(messages[0]['content']) if messages else 0} characters.")
    prompt_tokens = sum(len(m.get("content", "")) for m in messages) // 4
    return text, prompt_tokens


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self.send_error(404)
            return
        length = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        text, prompt_tokens = reply_for(body)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(text) // 4}
        model = body.get("model", "fake")
        if not body.get("stream"):
            payload = json.dumps({
                "id": "fake-1", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": usage,
            }).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
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
