// Coach playground: chat (streamed), sessions, uploads, against the local stack or a
// deployed one. Plain DOM, no framework; every text from the API is set with textContent,
// and answers are rendered by markdown.js, which builds nodes and never parses HTML.
"use strict";

const $ = (id) => document.getElementById(id);

const settings = {
  chat: $("chat-url"),
  stream: $("stream-url"),
  documents: $("documents-url"),
  token: $("token"),
};

// Defaults for `make dev` (cargo lambda watch on 127.0.0.1:9000); `dev.json`, written by
// `make dev` beside this page, replaces them with the stack's actual addresses.
const defaults = {
  chat: "http://127.0.0.1:9000/lambda-url/chat",
  stream: "http://127.0.0.1:9000/lambda-url/chat-stream",
  documents: "http://127.0.0.1:9000/lambda-url/upload-url",
};

let sessionId = null;

function load() {
  for (const [name, input] of Object.entries(settings)) {
    input.value = sessionStorage.getItem(`coach.${name}`) || defaults[name] || "";
    input.addEventListener("change", () => sessionStorage.setItem(`coach.${name}`, input.value.trim()));
  }
  fetch("dev.json", { cache: "no-store" })
    .then((r) => (r.ok ? r.json() : null))
    .then((dev) => {
      if (!dev) return;
      for (const name of ["chat", "stream", "documents"]) {
        if (dev[name] && !sessionStorage.getItem(`coach.${name}`)) settings[name].value = dev[name];
      }
    })
    .catch(() => {});
}

function url(name, path) {
  return settings[name].value.trim().replace(/\/+$/, "") + path;
}

function headers(json) {
  const h = { Authorization: `Bearer ${settings.token.value.trim()}` };
  if (json) h["Content-Type"] = "application/json";
  return h;
}

/** A JSON API call: the parsed body, or an Error carrying Coach's error message. */
async function api(name, method, path, body) {
  const response = await fetch(url(name, path), {
    method,
    headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = data && data.error ? `${data.error.code}: ${data.error.message}` : `HTTP ${response.status}`;
    throw new Error(error);
  }
  return data;
}

function say(id, text, kind) {
  const element = $(id);
  element.textContent = text;
  element.dataset.kind = kind || "";
}

// ------------------------------------------------------------------ connection

$("fetch-token").addEventListener("click", async () => {
  try {
    const response = await fetch("dev.json", { cache: "no-store" });
    if (!response.ok) throw new Error("no dev.json here: start the page with make dev, or paste a token");
    const dev = await response.json();
    settings.token.value = dev.token;
    sessionStorage.setItem("coach.token", dev.token);
    say("identity", "dev token loaded", "ok");
  } catch (e) {
    say("identity", e.message, "error");
  }
});

$("whoami").addEventListener("click", async () => {
  try {
    const me = await api("chat", "GET", "/me");
    say("identity", `${me.user_id} of ${me.tenant} (${me.roles.join(", ")})`, "ok");
  } catch (e) {
    say("identity", e.message, "error");
  }
});

// ------------------------------------------------------------------ chat

/** A user's message, as text. */
function addQuestion(text) {
  const item = document.createElement("div");
  item.className = "message user";
  const who = document.createElement("strong");
  who.textContent = "You";
  const body = document.createElement("p");
  body.textContent = text;
  item.append(who, body);
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
}

/**
 * A reply: its Markdown (re-rendered as it streams), its sources behind the `[n]` markers,
 * a usage line and thumbs up/down once it is stored.
 */
class Reply {
  constructor() {
    this.text = "";
    this.sources = [];
    this.element = document.createElement("div");
    this.element.className = "message assistant";
    const who = document.createElement("strong");
    who.textContent = "Coach";
    this.body = document.createElement("div");
    this.body.className = "answer";
    this.meta = document.createElement("div");
    this.meta.className = "meta";
    this.element.append(who, this.body, this.meta);
    $("messages").append(this.element);
  }

  append(text) {
    this.text += text;
    this.render();
  }

  setSources(sources) {
    this.sources = sources || [];
    this.render();
    showSources(this);
  }

  render() {
    this.body.replaceChildren(Markdown.render(this.text, (n) => this.marker(n)));
    this.element.scrollIntoView({ block: "end" });
  }

  /** The link a marker `[n]` becomes when the reply has an n-th source. */
  marker(n) {
    const source = this.sources[n - 1];
    if (!source) return null;
    const link = document.createElement("a");
    link.className = "cite";
    link.href = `#source-${n}`;
    link.textContent = `[${n}]`;
    link.title = source.title;
    link.addEventListener("click", (event) => {
      event.preventDefault();
      showSources(this);
      openPassage(source, n);
    });
    return link;
  }

  /** The usage line and, for a stored reply, the ratings. */
  finish({ sessionId, messageId, model, usage, seconds, incomplete, feedback }) {
    this.meta.replaceChildren();
    const line = document.createElement("span");
    line.className = "usage";
    const parts = [model || "no model"];
    if (usage && (usage.input_tokens || usage.output_tokens)) {
      parts.push(`${usage.input_tokens.toLocaleString("en")} in · ${usage.output_tokens.toLocaleString("en")} out tokens`);
    } else parts.push("no model tokens");
    if (seconds !== undefined) parts.push(`${seconds.toFixed(1)} s`);
    if (incomplete) parts.push("incomplete");
    line.textContent = parts.join(" · ");
    this.meta.append(line);
    if (sessionId && messageId) this.meta.append(...ratings(sessionId, messageId, feedback && feedback.rating));
  }
}

/** Thumbs up and down for a stored reply; the pressed one is the rating Coach holds. */
function ratings(sessionId, messageId, current) {
  const buttons = [];
  // Words, not emoji: a system without an emoji font would show empty boxes.
  for (const [rating, label] of [["up", "Helpful"], ["down", "Not helpful"]]) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = `rate ${rating}`;
    button.textContent = label;
    button.title = `Rate this reply ${rating === "up" ? "up" : "down"}`;
    button.setAttribute("aria-pressed", String(current === rating));
    button.addEventListener("click", async () => {
      buttons.forEach((b) => (b.disabled = true));
      try {
        const path = `/sessions/${encodeURIComponent(sessionId)}/messages/${encodeURIComponent(messageId)}/feedback`;
        const stored = await api("chat", "PUT", path, { rating });
        for (const b of buttons) b.setAttribute("aria-pressed", String(b.classList.contains(stored.feedback.rating)));
        say("chat-status", `rated ${stored.feedback.rating}`, "ok");
      } catch (e) {
        say("chat-status", e.message, "error");
      } finally {
        buttons.forEach((b) => (b.disabled = false));
      }
    });
    buttons.push(button);
  }
  return buttons;
}

/** Where a passage is: its heading path, pages and characters in the extracted text. */
function place(passage) {
  const parts = [];
  if (passage.heading) parts.push(passage.heading);
  if (passage.pages) {
    const [first, last] = passage.pages;
    parts.push(first === last ? `page ${first}` : `pages ${first}-${last}`);
  }
  if (passage.start !== undefined && passage.end !== undefined) {
    parts.push(`characters ${passage.start.toLocaleString("en")}-${passage.end.toLocaleString("en")}`);
  }
  return parts.join(" · ");
}

/** The sources of `reply`, numbered as its markers. */
function showSources(reply) {
  const list = $("sources");
  list.replaceChildren();
  reply.sources.forEach((source, i) => {
    const n = i + 1;
    const item = document.createElement("li");
    item.className = "source";
    item.id = `source-${n}`;
    const open = document.createElement("button");
    open.type = "button";
    open.className = "link";
    open.textContent = `${source.title} (part ${source.chunk + 1})`;
    open.addEventListener("click", () => openPassage(source, n));
    const where = document.createElement("span");
    where.className = "muted";
    where.textContent = [place(source), `score ${source.score.toFixed(2)}`].filter(Boolean).join(" · ");
    const snippet = document.createElement("span");
    snippet.className = "snippet";
    snippet.textContent = source.snippet;
    item.append(open, " ", where, snippet);
    list.append(item);
  });
}

/** Source `n`'s passage, with the passages around it, as the document holds them. */
async function openPassage(source, n) {
  for (const item of $("sources").children) item.classList.toggle("selected", item.id === `source-${n}`);
  const panel = $("passage");
  panel.hidden = false;
  $("passage-title").textContent = `[${n}] ${source.title}`;
  $("passage-place").textContent = "";
  const text = $("passage-text");
  text.replaceChildren("loading…");
  try {
    const path = `/documents/${encodeURIComponent(source.document_id)}/chunks/${source.chunk}?context=1`;
    const found = await api("documents", "GET", path);
    $("passage-place").textContent = [`part ${found.passage.chunk + 1} of ${found.chunks}`, place(found.passage)]
      .filter(Boolean).join(" · ");
    const paragraph = (passage, className) => {
      const p = document.createElement("p");
      p.className = className;
      p.textContent = passage.text;
      return p;
    };
    text.replaceChildren(
      ...found.before.map((p) => paragraph(p, "context")),
      paragraph(found.passage, "cited"),
      ...found.after.map((p) => paragraph(p, "context")),
    );
    panel.scrollIntoView({ block: "nearest" });
  } catch (e) {
    text.replaceChildren(e.message);
  }
}

/** The caller's usage this month, from `GET /usage`. */
async function showUsage() {
  try {
    const report = await api("chat", "GET", "/usage");
    const t = report.totals;
    const tokens = (t.input_tokens + t.output_tokens).toLocaleString("en");
    say("usage-line", `Since ${report.from}: ${tokens} tokens in ${t.requests} calls, about $${t.cost_usd.toFixed(4)}`);
  } catch (e) {
    say("usage-line", `usage: ${e.message}`, "error");
  }
}

function setSession(id) {
  sessionId = id;
  $("session-label").textContent = id ? `session ${id}` : "(new session)";
}

/** Reads a Server-Sent Events body, calling `onEvent(name, data)` per event. */
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

$("chat-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const message = $("message").value.trim();
  if (!message) return;
  $("message").value = "";
  $("send").disabled = true;
  addQuestion(message);
  const reply = new Reply();
  const started = performance.now();
  say("chat-status", "answering…");
  try {
    const body = sessionId ? { message, session_id: sessionId } : { message };
    const response = await fetch(url("stream", "/chat/stream"), {
      method: "POST",
      headers: headers(true),
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      const data = await response.json().catch(() => null);
      throw new Error(data && data.error ? `${data.error.code}: ${data.error.message}` : `HTTP ${response.status}`);
    }
    await readEvents(response, (name, data) => {
      if (name === "token") reply.append(data.text);
      else if (name === "sources") reply.setSources(data);
      else if (name === "done") {
        setSession(data.session_id);
        reply.finish({
          sessionId: data.session_id,
          messageId: data.message_id,
          model: data.model,
          usage: data.usage,
          seconds: (performance.now() - started) / 1000,
        });
        say("chat-status", `answered by ${data.model}`, "ok");
      } else if (name === "error") throw new Error(`${data.code}: ${data.message}`);
    });
    showUsage();
  } catch (e) {
    say("chat-status", e.message, "error");
  } finally {
    $("send").disabled = false;
  }
});

$("new-session").addEventListener("click", () => {
  setSession(null);
  $("messages").replaceChildren();
  $("sources").replaceChildren();
  $("passage").hidden = true;
});

// ------------------------------------------------------------------ sessions

$("list-sessions").addEventListener("click", async () => {
  const list = $("session-list");
  try {
    const page = await api("chat", "GET", "/sessions?limit=20");
    list.replaceChildren();
    for (const session of page.sessions) {
      const item = document.createElement("li");
      const open = document.createElement("button");
      open.type = "button";
      open.className = "link";
      open.textContent = `${session.title} (${session.message_count})`;
      open.addEventListener("click", () => openSession(session.session_id));
      item.append(open);
      list.append(item);
    }
    if (!page.sessions.length) list.textContent = "No sessions yet.";
  } catch (e) {
    list.textContent = e.message;
  }
});

async function openSession(id) {
  try {
    const page = await api("chat", "GET", `/sessions/${encodeURIComponent(id)}/messages?limit=50`);
    $("messages").replaceChildren();
    $("passage").hidden = true;
    let latest = null;
    for (const m of page.messages.slice().reverse()) {
      if (m.role === "user") {
        addQuestion(m.content);
        continue;
      }
      latest = new Reply();
      latest.sources = m.sources || [];
      latest.append(m.content);
      latest.finish({ sessionId: id, messageId: m.message_id, model: m.model, usage: m.usage,
        incomplete: m.incomplete, feedback: m.feedback });
    }
    if (latest) showSources(latest);
    else $("sources").replaceChildren();
    setSession(id);
  } catch (e) {
    say("chat-status", e.message, "error");
  }
}

// ------------------------------------------------------------------ documents

const TYPES = {
  md: "text/markdown",
  markdown: "text/markdown",
  txt: "text/plain",
  html: "text/html",
  htm: "text/html",
  csv: "text/csv",
  pdf: "application/pdf",
  docx: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
};

function contentType(file) {
  const extension = file.name.split(".").pop().toLowerCase();
  return TYPES[extension] || file.type || "application/octet-stream";
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

$("upload-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) return;
  $("upload").disabled = true;
  try {
    say("upload-status", `uploading ${file.name}…`);
    const request = { filename: file.name, content_type: contentType(file), size_bytes: file.size };
    const upload = await api("documents", "POST", "/uploads", request);
    // The browser sets Content-Length itself (it may not be set by a page).
    const put = {};
    for (const [name, value] of Object.entries(upload.headers)) {
      if (name.toLowerCase() !== "content-length") put[name] = value;
    }
    const stored = await fetch(upload.upload_url, { method: upload.method, headers: put, body: file });
    if (!stored.ok) throw new Error(`the upload was refused (HTTP ${stored.status})`);
    for (let i = 0; i < 300; i++) {
      const doc = await api("documents", "GET", `/documents/${upload.document_id}`);
      say("upload-status", `${file.name}: ${doc.status}${doc.error ? ` (${doc.error})` : ""}`,
        doc.status === "ready" ? "ok" : doc.status === "failed" ? "error" : "");
      $("upload-status").dataset.status = doc.status;
      if (doc.status === "ready" || doc.status === "failed") break;
      await sleep(1000);
    }
    listDocuments();
  } catch (e) {
    say("upload-status", e.message, "error");
  } finally {
    $("upload").disabled = false;
  }
});

async function listDocuments() {
  const list = $("document-list");
  try {
    const page = await api("documents", "GET", "/documents?limit=50");
    list.replaceChildren();
    for (const doc of page.documents) {
      const item = document.createElement("li");
      item.textContent = `${doc.filename}: ${doc.status}`;
      list.append(item);
    }
    if (!page.documents.length) list.textContent = "No documents yet.";
  } catch (e) {
    list.textContent = e.message;
  }
}

$("list-documents").addEventListener("click", listDocuments);

load();
setSession(null);
