/*
 * Switchboard web chat widget: plain modern JavaScript, no build step, served by the gateway.
 *
 * Embed it with one tag (docs/http-api.md, "The web chat widget"):
 *   <script src="https://gateway.example/widget.js" data-key="pk-..." defer></script>
 * Attributes: data-key (a publishable key, never a secret one), data-api (the gateway's base
 * URL; default: where this script came from), data-title, data-open ("true" opens the panel
 * at load), data-model (auto | cheap | frontier | switchboard).
 *
 * It opens a browser session (POST /v1/widget/sessions), streams replies from
 * POST /v1/chat/completions (Server-Sent Events, with Switchboard's `switchboard` extension on
 * each chunk: tool status, reset, handoff), keeps the conversation id and the session in
 * localStorage so that a reload resumes the conversation, and rates replies over
 * POST /v1/feedback.
 */
(() => {
  "use strict";
  const script = document.currentScript;
  if (!script) return;
  const KEY = script.dataset.key || "";
  const API = (script.dataset.api || new URL(script.src, location.href).origin).replace(/\/$/, "");
  const TITLE = script.dataset.title || "Chat with us";
  const MODEL = script.dataset.model || "switchboard";
  const STORE = `switchboard-widget:${API}:${KEY}`;

  const CSS = `
    :host { all: initial; }
    * { box-sizing: border-box; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
    .launcher { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000; border: 0;
      border-radius: 999px; padding: 14px 20px; font-size: 16px; background: #1f4fd1; color: #fff;
      cursor: pointer; box-shadow: 0 4px 14px rgba(0,0,0,.25); }
    .panel { position: fixed; right: 20px; bottom: 20px; z-index: 2147483001; display: flex;
      flex-direction: column; width: min(400px, calc(100vw - 40px)); height: min(620px, calc(100vh - 40px));
      background: #fff; color: #1b1b1b; border-radius: 14px; box-shadow: 0 8px 30px rgba(0,0,0,.3);
      overflow: hidden; }
    .panel[hidden], .launcher[hidden] { display: none; }
    header { display: flex; align-items: center; gap: 8px; padding: 12px 14px; background: #1f4fd1; color: #fff; }
    header h2 { flex: 1; margin: 0; font-size: 17px; }
    header button { background: transparent; color: #fff; border: 1px solid rgba(255,255,255,.6);
      border-radius: 8px; padding: 6px 10px; font-size: 14px; cursor: pointer; min-height: 36px; }
    .log { flex: 1; overflow-y: auto; padding: 14px; display: flex; flex-direction: column; gap: 10px; }
    .msg { max-width: 85%; padding: 9px 12px; border-radius: 12px; line-height: 1.4; font-size: 15px;
      white-space: pre-wrap; overflow-wrap: anywhere; }
    .user { align-self: flex-end; background: #1f4fd1; color: #fff; }
    .assistant { align-self: flex-start; background: #f0f2f5; }
    .note { align-self: center; font-size: 13px; color: #4a4a4a; background: #fff7d6; border-radius: 8px;
      padding: 6px 10px; }
    .handoff { align-self: stretch; background: #e7f6ec; color: #0f5132; border-radius: 8px; padding: 10px 12px;
      font-size: 14px; }
    .error { align-self: stretch; background: #fde8e8; color: #8a1111; border-radius: 8px; padding: 8px 12px; font-size: 14px; }
    .feedback { display: flex; gap: 6px; margin-top: 6px; }
    .feedback button { border: 1px solid #c5c9d0; background: #fff; border-radius: 8px; min-width: 40px;
      min-height: 32px; cursor: pointer; font-size: 15px; }
    .feedback button[aria-pressed="true"] { background: #dbe6ff; border-color: #1f4fd1; }
    .status { font-size: 13px; color: #555; padding: 0 14px 4px; min-height: 18px; }
    form { display: flex; gap: 8px; padding: 10px; border-top: 1px solid #e3e5e8; }
    textarea { flex: 1; resize: none; font-size: 16px; padding: 9px; border: 1px solid #b8bdc6; border-radius: 10px;
      min-height: 44px; max-height: 120px; }
    form button { border: 0; background: #1f4fd1; color: #fff; border-radius: 10px; padding: 0 16px;
      font-size: 16px; min-height: 44px; cursor: pointer; }
    form button:disabled { opacity: .6; cursor: default; }
    button:focus-visible, textarea:focus-visible { outline: 3px solid #ffbf47; outline-offset: 2px; }
    .sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
    @media (max-width: 520px) {
      .panel { inset: 0; width: 100vw; height: 100dvh; border-radius: 0; right: 0; bottom: 0; }
    }`;

  const state = load();
  let busy = false;

  function load() {
    try { return JSON.parse(localStorage.getItem(STORE) || "{}"); } catch { return {}; }
  }
  function save() {
    try { localStorage.setItem(STORE, JSON.stringify(state)); } catch { /* private mode */ }
  }

  // ---- the DOM (in a shadow root, so the host page's styles cannot break it) ----------------
  const host = document.createElement("div");
  host.setAttribute("data-switchboard-widget", "");
  const root = host.attachShadow({ mode: "open" });
  root.innerHTML = `
    <style>${CSS}</style>
    <button class="launcher" type="button" aria-haspopup="true" aria-expanded="false">${escapeHtml(TITLE)}</button>
    <section class="panel" role="region" aria-label="${escapeHtml(TITLE)}" hidden>
      <header>
        <h2>${escapeHtml(TITLE)}</h2>
        <button type="button" class="new" aria-label="Start a new conversation">New</button>
        <button type="button" class="close" aria-label="Close the chat">Close</button>
      </header>
      <div class="log" role="log" aria-live="polite" aria-relevant="additions text" tabindex="0"
           aria-label="Conversation"></div>
      <div class="status" aria-live="polite"></div>
      <form>
        <label class="sr-only" for="sb-input">Your message</label>
        <textarea id="sb-input" rows="1" placeholder="Type your message…" autocomplete="off"
                  enterkeyhint="send"></textarea>
        <button type="submit">Send</button>
      </form>
    </section>`;
  const $ = (selector) => root.querySelector(selector);
  const launcher = $(".launcher"), panel = $(".panel"), log = $(".log"), status = $(".status");
  const form = $("form"), input = $("textarea"), send = $("form button");

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  function open() {
    panel.hidden = false;
    launcher.hidden = true;
    launcher.setAttribute("aria-expanded", "true");
    input.focus();
  }
  function close() {
    panel.hidden = true;
    launcher.hidden = false;
    launcher.setAttribute("aria-expanded", "false");
    launcher.focus();
  }
  launcher.addEventListener("click", open);
  $(".close").addEventListener("click", close);
  panel.addEventListener("keydown", (event) => { if (event.key === "Escape") close(); });
  $(".new").addEventListener("click", () => {
    if (busy) return;
    state.conversation_id = "";
    state.transcript = [];
    save();
    log.replaceChildren();
    announce("Started a new conversation.");
    input.focus();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (text && !busy) { input.value = ""; chat(text); }
  });

  function announce(text) { status.textContent = text; }

  function bubble(role, text) {
    const node = document.createElement("div");
    node.className = `msg ${role}`;
    node.setAttribute("data-role", role);
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    node.append(body);
    log.append(node);
    log.scrollTop = log.scrollHeight;
    return node;
  }
  function notice(className, text) {
    const node = document.createElement("div");
    node.className = className;
    node.setAttribute("role", className === "error" ? "alert" : "status");
    node.textContent = text;
    log.append(node);
    log.scrollTop = log.scrollHeight;
    return node;
  }
  function handoffNotice(ticket) {
    return notice("handoff", `A person will take over this conversation${ticket ? ` (ticket ${ticket})` : ""}.`);
  }

  function feedbackButtons(node, requestId, rated) {
    if (!requestId) return;
    const bar = document.createElement("div");
    bar.className = "feedback";
    bar.setAttribute("role", "group");
    bar.setAttribute("aria-label", "Rate this reply");
    for (const [rating, label, symbol] of [["up", "Helpful", "▲ Good"], ["down", "Not helpful", "▼ Bad"]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = symbol;
      button.setAttribute("aria-label", label);
      button.setAttribute("aria-pressed", String(rated === rating));
      button.dataset.rating = rating;
      button.addEventListener("click", () => rate(bar, requestId, rating));
      bar.append(button);
    }
    node.append(bar);
  }

  async function rate(bar, requestId, rating) {
    try {
      const response = await api("/v1/feedback", { method: "POST", body: JSON.stringify({ request_id: requestId, rating }) });
      if (!response.ok) throw new Error((await errorOf(response)).message);
      for (const button of bar.querySelectorAll("button")) button.setAttribute("aria-pressed", String(button.dataset.rating === rating));
      const entry = (state.transcript || []).find((e) => e.request_id === requestId);
      if (entry) { entry.rating = rating; save(); }
      announce("Thanks for your feedback.");
    } catch (error) {
      announce(`Feedback not sent: ${error.message}`);
    }
  }

  // ---- the API ------------------------------------------------------------------------------
  async function session() {
    if (state.session) return state.session;
    const response = await fetch(`${API}/v1/widget/sessions`, {
      method: "POST", headers: { Authorization: `Bearer ${KEY}` }, mode: "cors",
    });
    if (!response.ok) throw new Error((await errorOf(response)).message);
    const body = await response.json();
    state.session = body.session;
    save();
    return state.session;
  }

  async function api(path, init = {}, retried = false) {
    const token = await session();
    const headers = { Authorization: `Bearer ${KEY}`, "sb-session": token, "Content-Type": "application/json", ...(init.headers || {}) };
    const response = await fetch(`${API}${path}`, { ...init, headers, mode: "cors" });
    if (response.status === 401 && !retried) {
      const error = await errorOf(response.clone());
      if (error.code === "session_expired") {
        // A new session owns nothing yet: the old conversation cannot be continued.
        state.session = ""; state.conversation_id = ""; save();
        return api(path, init, true);
      }
    }
    return response;
  }

  async function errorOf(response) {
    try {
      const body = await response.json();
      return body.error || { message: response.statusText };
    } catch { return { message: `HTTP ${response.status}` }; }
  }

  async function chat(text) {
    busy = true;
    send.disabled = true;
    log.setAttribute("aria-busy", "true");
    bubble("user", text);
    remember({ role: "user", text });
    const node = bubble("assistant", "");
    const body = node.querySelector(".text");
    let requestId = "", reply = "", handoff = null;
    announce("Assistant is typing…");
    try {
      const payload = { model: MODEL, stream: true, messages: [{ role: "user", content: text }] };
      if (state.conversation_id) payload.metadata = { conversation_id: state.conversation_id };
      const response = await api("/v1/chat/completions", {
        method: "POST", body: JSON.stringify(payload),
        // The widget handles `reset` itself: it gets every delta at once (docs/http-api.md).
        headers: { "Idempotency-Key": crypto.randomUUID(), "sb-resets": "client" },
      });
      if (!response.ok) {
        const error = await errorOf(response);
        const wait = response.headers.get("retry-after");
        throw new Error(wait ? `${error.message} (try again in ${wait} s)` : error.message);
      }
      for await (const data of events(response)) {
        if (data.error) throw new Error(data.error.message);
        const extension = data.switchboard;
        const content = data.choices && data.choices[0] && data.choices[0].delta && data.choices[0].delta.content;
        if (content) { reply += content; body.textContent = reply; log.scrollTop = log.scrollHeight; }
        if (!extension) continue;
        if (extension.type === "started") {
          requestId = extension.request_id;
          if (state.conversation_id !== extension.conversation_id) { state.conversation_id = extension.conversation_id; save(); }
        } else if (extension.type === "tool") {
          announce(extension.status === "running" ? `Looking that up (${extension.name})…` : `${extension.name}: ${extension.status}`);
        } else if (extension.type === "reset") {
          // The generation restarted: drop the partial reply, the new one streams next.
          reply = ""; body.textContent = "";
          announce("Revising the answer…");
        } else if (extension.type === "handoff") {
          handoff = extension.ticket_id || "";
        } else if (extension.type === "done" && typeof extension.content === "string") {
          reply = extension.content; body.textContent = reply;
        }
      }
      node.setAttribute("data-request-id", requestId);
      node.setAttribute("data-complete", "true");
      remember({ role: "assistant", text: reply, request_id: requestId, handoff });
      feedbackButtons(node, requestId, "");
      if (handoff !== null) handoffNotice(handoff);
      announce("");
    } catch (error) {
      if (!reply) node.remove();
      notice("error", `Sorry, something went wrong: ${error.message}`);
      announce("");
    } finally {
      busy = false;
      send.disabled = false;
      log.setAttribute("aria-busy", "false");
    }
  }

  // Server-Sent Events of a fetch response: yields each `data:` object until [DONE].
  async function* events(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }

  function remember(entry) {
    state.transcript = [...(state.transcript || []), entry].slice(-200);
    save();
  }

  function render(transcript) {
    log.replaceChildren();
    for (const entry of transcript) {
      const node = bubble(entry.role, entry.text);
      if (entry.role === "assistant") {
        node.setAttribute("data-complete", "true");
        if (entry.request_id) node.setAttribute("data-request-id", entry.request_id);
        feedbackButtons(node, entry.request_id, entry.rating || "");
        if (entry.handoff !== null && entry.handoff !== undefined) handoffNotice(entry.handoff);
      }
    }
  }

  // After a reload: show what this browser saw at once, then what the server stored.
  async function resume() {
    if (!state.conversation_id) return;
    render(state.transcript || []);
    try {
      const response = await api(`/v1/conversations/${encodeURIComponent(state.conversation_id)}/items?order=asc&limit=100`);
      if (response.status === 404) { state.conversation_id = ""; state.transcript = []; save(); log.replaceChildren(); return; }
      if (!response.ok) return;
      const page = await response.json();
      const stored = page.data.map((item) => ({
        role: item.role,
        text: item.content.map((part) => part.text).join(""),
        request_id: item.role === "assistant" && item.switchboard ? item.switchboard.request_id : undefined,
      }));
      const local = state.transcript || [];
      if (stored.length >= local.length) {
        for (const entry of stored) {
          const seen = local.find((l) => l.request_id && l.request_id === entry.request_id);
          if (seen) { entry.rating = seen.rating; entry.handoff = seen.handoff; }
        }
        state.transcript = stored;
        save();
        render(stored);
      }
    } catch { /* the local transcript stays */ }
  }

  function mount() {
    document.body.append(host);
    if (script.dataset.open === "true") open();
    resume();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", mount);
  else mount();
})();
