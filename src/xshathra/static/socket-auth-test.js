// Xshathra's socket auth test page: a minimal Centrifuge protocol v2 (JSON) client, written for
// this page only, so a person can check tokens, connection and subscriptions by hand.
"use strict";

const $ = (id) => document.getElementById(id);
let socket = null;
let nextId = 1;
const pending = new Map(); // command id -> callback for its reply

function setStep(step, state, statusId, text) {
  $(step).dataset.state = state;
  const status = $(statusId);
  status.textContent = text; // textContent, never innerHTML: the server's words are data
  status.className = "status " + (state === "done" ? "ok" : state === "failed" ? "bad" : "");
}

function log(kind, detail) {
  const item = document.createElement("li");
  for (const [cls, text] of [["time", new Date().toLocaleTimeString()], ["kind", kind],
                             ["detail", detail]]) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text;
    item.append(span);
  }
  $("log").prepend(item);
}

async function postJSON(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: "apikey " + $("api-key").value.trim() },
    body: JSON.stringify(body),
  });
  const json = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(json.error || "HTTP " + response.status);
  return json;
}

function send(command, onReply) {
  const id = nextId++;
  pending.set(id, onReply);
  socket.send(JSON.stringify({ id, ...command }));
}

function handleReply(reply) {
  if (reply.id && pending.has(reply.id)) {
    const callback = pending.get(reply.id);
    pending.delete(reply.id);
    callback(reply);
    return;
  }
  const push = reply.push;
  if (!push) {
    // An empty reply is the server's ping: answer with an empty command (pong).
    if (Object.keys(reply).length === 0) socket.send("{}");
    return;
  }
  if (push.pub) {
    const tags = push.pub.tags ? " tags=" + JSON.stringify(push.pub.tags) : "";
    log("publication", push.channel + " " + JSON.stringify(push.pub.data) + tags);
    $("step-messages").dataset.state = "done";
  } else if (push.join) log("join", push.channel + " " + push.join.info.user);
  else if (push.leave) log("leave", push.channel + " " + push.leave.info.user);
  else if (push.unsubscribe) log("unsubscribed", push.channel + " code " + push.unsubscribe.code);
  else if (push.subscribe) log("subscribed", push.channel + " (server-side)");
}

$("get-token").addEventListener("click", async () => {
  try {
    const channels = $("token-channels").value.split(",").map((c) => c.trim()).filter(Boolean);
    const body = { userId: $("user-id").value.trim() };
    if (channels.length) body.channels = channels;
    const json = await postJSON("/api/realtime/token", body);
    $("token").value = json.token;
    setStep("step-token", "done", "token-status", "Token issued, valid for " + json.expiresInSeconds + " s.");
  } catch (error) {
    setStep("step-token", "failed", "token-status", "Token request failed: " + error.message);
  }
});

$("connect").addEventListener("click", () => {
  const token = $("token").value.trim();
  if (!token) {
    setStep("step-token", "failed", "token-status", "Get or paste a token first.");
    return;
  }
  if (socket) socket.close();
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  socket = new WebSocket(scheme + location.host + "/realtime/connection/websocket");
  setStep("step-connect", "todo", "connect-status", "Connecting…");
  socket.onopen = () => {
    send({ connect: { token, name: "xshathra-test-page" } }, (reply) => {
      if (reply.error) {
        setStep("step-connect", "failed", "connect-status",
          "Connect refused: error " + reply.error.code + " " + reply.error.message);
        return;
      }
      setStep("step-connect", "done", "connect-status", "Connected as client " + reply.connect.client + ".");
      log("connected", "client " + reply.connect.client);
    });
  };
  // The server may batch several replies in one frame, one JSON document per line.
  socket.onmessage = (event) => {
    for (const line of String(event.data).split("\n")) {
      if (line.trim()) handleReply(JSON.parse(line));
    }
  };
  socket.onclose = (event) => {
    const text = "Closed: code " + event.code + (event.reason ? " (" + event.reason + ")" : "");
    setStep("step-connect", event.code === 1000 ? "todo" : "failed", "connect-status", text);
    log("closed", text);
    socket = null;
  };
});

$("disconnect").addEventListener("click", () => socket && socket.close(1000, "closed by the page"));

$("get-sub-token").addEventListener("click", async () => {
  try {
    const json = await postJSON("/api/realtime/subscription-token",
      { userId: $("user-id").value.trim(), channel: $("channel").value.trim() });
    $("sub-token").value = json.token;
    setStep("step-subscribe", "todo", "subscribe-status", "Subscription token issued.");
  } catch (error) {
    setStep("step-subscribe", "failed", "subscribe-status", "Subscription token failed: " + error.message);
  }
});

$("subscribe").addEventListener("click", () => {
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    setStep("step-subscribe", "failed", "subscribe-status", "Connect first.");
    return;
  }
  const channel = $("channel").value.trim();
  const subscribe = { channel };
  if ($("sub-token").value.trim()) subscribe.token = $("sub-token").value.trim();
  send({ subscribe }, (reply) => {
    if (reply.error) {
      setStep("step-subscribe", "failed", "subscribe-status",
        "Subscribe refused: error " + reply.error.code + " " + reply.error.message);
      return;
    }
    setStep("step-subscribe", "done", "subscribe-status", "Subscribed to " + channel + ".");
    log("subscribed", channel);
  });
});

$("publish").addEventListener("click", async () => {
  try {
    const json = await postJSON("/api/realtime/publish", {
      channel: $("channel").value.trim(),
      data: { text: $("message-text").value, at: new Date().toISOString() },
    });
    if (json.error) log("publish error", json.error.code + " " + json.error.message);
  } catch (error) {
    log("publish error", error.message);
  }
});
