// chatgate's chat page: plain JavaScript over the /v1/ws protocol and the HTTP API.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { ws: null, token: "", conversationId: null, pending: null, seq: 0 };

const ERROR_WORDS = {
  unauthorized: "Your token was refused. Get a new one and connect again.",
  forbidden: "You are not allowed to do that.",
  invalid_request: "The message was not accepted",
  not_found: "That conversation does not exist (or is not yours).",
  rate_limited: "You are sending messages too fast. Try again in a moment.",
  budget_exceeded: "Your token budget is used up",
  provider_error: "The AI provider failed to answer. Please try again.",
  provider_timeout: "The AI provider took too long to answer. Please try again.",
  unavailable: "The service is temporarily unavailable.",
  internal: "Something went wrong on our side.",
};
const SCOPE_WORDS = {
  user_day: "for today", user_month: "for this month",
  brand_month: "for this service this month", conversation: "for this conversation",
};

function explain(frame) {
  let text = ERROR_WORDS[frame.code] || frame.message;
  if (frame.code === "budget_exceeded") text += " " + (SCOPE_WORDS[frame.scope] || "") + ".";
  else if (frame.code === "invalid_request") text += ": " + frame.message;
  if (frame.retry_after_ms) text += ` (retry in ${Math.ceil(frame.retry_after_ms / 1000)} s)`;
  return text;
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("messages").appendChild(div);
  $("messages").scrollTop = $("messages").scrollHeight;
  return div;
}

function setConnected(on) {
  $("status").textContent = on ? "connected" : "not connected";
  for (const id of ["input", "send"]) $(id).disabled = !on;
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options, headers: { Authorization: "Bearer " + state.token, ...(options.headers || {}) },
  });
  const body = await response.json();
  if (!response.ok) throw new Error(explain(body.error || {}));
  return body;
}

async function refreshSide() {
  try {
    const list = await api("/v1/conversations?limit=30");
    const ul = $("conversations");
    ul.replaceChildren();
    const items = list.data;
    if (state.conversationId && !items.some((c) => c.conversation_id === state.conversationId)) {
      // History is written behind the stream; show the current conversation meanwhile.
      items.unshift({ conversation_id: state.conversationId, title: "Current conversation" });
    }
    for (const c of items) {
      const li = document.createElement("li");
      li.textContent = c.title || c.conversation_id;
      li.dataset.id = c.conversation_id;
      if (c.conversation_id === state.conversationId) li.className = "active";
      li.onclick = () => openConversation(c.conversation_id);
      ul.appendChild(li);
    }
    const u = await api("/v1/usage");
    const lim = (n) => (n === -1 ? "unlimited" : n);
    $("usage").textContent =
      `Plan: ${u.plan}\nToday: ${u.user.day.used} / ${lim(u.user.day.limit)} tokens\n` +
      `Month: ${u.user.month.used} / ${lim(u.user.month.limit)} tokens`;
  } catch (err) {
    $("usage").textContent = err.message;
  }
}

async function openConversation(id) {
  const conv = await api("/v1/conversations/" + id);
  state.conversationId = id;
  $("messages").replaceChildren();
  for (const m of conv.messages) addMessage(m.role, m.content);
  refreshSide();
}

function connect() {
  state.token = $("token").value.trim();
  if (state.ws) state.ws.close();
  const url = new URL("/v1/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("token", state.token);
  const ws = new WebSocket(url);
  ws.onopen = () => { setConnected(true); refreshSide(); };
  ws.onclose = () => { setConnected(false); if (state.ws === ws) state.ws = null; };
  ws.onerror = () => { $("status").textContent = "connection refused: check the token"; };
  ws.onmessage = (event) => onFrame(JSON.parse(event.data));
  state.ws = ws;
}

function onFrame(frame) {
  const turn = state.pending;
  if (!turn || frame.id !== turn.id) return;
  if (frame.type === "start") {
    state.conversationId = frame.conversation_id;
    turn.div.textContent = "";
    turn.meta = `${frame.provider} · ${frame.model}${frame.cached ? " · cached" : ""}`;
  } else if (frame.type === "delta") {
    turn.div.textContent += frame.text;
    $("messages").scrollTop = $("messages").scrollHeight;
  } else if (frame.type === "done") {
    const u = frame.usage;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = `${turn.meta} · ${u.prompt_tokens} + ${u.completion_tokens} tokens · ` +
      `$${frame.cost_usd.toFixed(6)} · ${frame.finish_reason}`;
    turn.div.appendChild(meta);
    finishTurn();
  } else if (frame.type === "error") {
    turn.div.className = "msg error";
    turn.div.textContent = explain(frame);
    finishTurn();
  }
}

function finishTurn() {
  state.pending = null;
  $("cancel").disabled = true;
  $("send").disabled = false;
  refreshSide();
}

function send(event) {
  event.preventDefault();
  const content = $("input").value.trim();
  if (!content || !state.ws || state.pending) return;
  const id = "c" + ++state.seq;
  addMessage("user", content);
  const div = addMessage("assistant", "…");
  state.pending = { id, div, meta: "" };
  state.ws.send(JSON.stringify({ type: "chat", id, content, conversation_id: state.conversationId }));
  $("input").value = "";
  $("send").disabled = true;
  $("cancel").disabled = false;
}

async function getDevToken() {
  const params = new URLSearchParams({
    user: $("dev-user").value, brand: $("dev-brand").value, plan: $("dev-plan").value,
  });
  const response = await fetch("/dev/token?" + params);
  const body = await response.json();
  if (!response.ok) { $("status").textContent = body.error.message; return; }
  $("token").value = body.token;
  connect();
}

$("connect").onclick = connect;
$("get-token").onclick = getDevToken;
$("composer").onsubmit = send;
$("input").onkeydown = (e) => { if (e.key === "Enter" && !e.shiftKey) send(e); };
$("cancel").onclick = () => state.pending && state.ws.send(JSON.stringify({ type: "cancel", id: state.pending.id }));
$("new-conversation").onclick = () => { state.conversationId = null; $("messages").replaceChildren(); refreshSide(); };
