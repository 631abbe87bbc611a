// Coach playground: chat (streamed), sessions, uploads, against the local stack or a
// deployed one. Plain DOM, no framework; every text from the API is set with textContent.
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

function addMessage(role, text) {
  const item = document.createElement("div");
  item.className = `message ${role}`;
  const who = document.createElement("strong");
  who.textContent = role === "user" ? "You" : "Coach";
  const body = document.createElement("p");
  body.textContent = text;
  item.append(who, body);
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
  return body;
}

function showSources(sources) {
  const list = $("sources");
  list.replaceChildren();
  for (const source of sources) {
    const item = document.createElement("li");
    item.className = "source";
    const title = document.createElement("strong");
    title.textContent = `${source.title} (part ${source.chunk + 1})`;
    const snippet = document.createElement("span");
    snippet.textContent = ` ${source.snippet}`;
    item.append(title, snippet);
    list.append(item);
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
  addMessage("user", message);
  const answer = addMessage("assistant", "");
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
      if (name === "token") answer.textContent += data.text;
      else if (name === "sources") showSources(data);
      else if (name === "done") {
        setSession(data.session_id);
        say("chat-status", `answered by ${data.model}`, "ok");
      } else if (name === "error") throw new Error(`${data.code}: ${data.message}`);
    });
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
    for (const m of page.messages.slice().reverse()) addMessage(m.role, m.content);
    const last = page.messages.find((m) => m.role === "assistant");
    showSources(last && last.sources ? last.sources : []);
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
