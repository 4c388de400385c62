// Xshathra's socket auth test page: a minimal Centrifuge client protocol v2 (JSON) client,
// written for this page only, so a person can check tokens, connecting and subscribing by hand.
// No framework and no third-party code. Nothing typed here is logged or stored: the API key
// lives only in its input field and goes only into the Authorization header of same-origin calls.
"use strict";

const $ = (id) => document.getElementById(id);

let socket = null; // the current WebSocket, or null
let nextId = 1; // command ids: the server answers each command with a reply carrying its id
const pending = new Map(); // command id -> callback for its reply
let pings = 0;

// --- page helpers --------------------------------------------------------------------------

const STATE_LABELS = { todo: "to do", busy: "working…", done: "done", failed: "failed" };

// Mark a step (todo | busy | done | failed) and put a sentence under it. Always textContent,
// never innerHTML: whatever the server or the user wrote is shown as text, not markup.
function setStep(step, state, text) {
  const section = $("step-" + step);
  section.dataset.state = state;
  section.querySelector(".state").textContent = STATE_LABELS[state];
  const status = $(step + "-status");
  status.textContent = text;
  status.className = "status " + state;
}

// Add one line to the message log (oldest first) and keep the newest line in view.
function log(kind, channel, detail) {
  const item = document.createElement("li");
  item.className = "kind-" + kind.replace(/\W+/g, "-");
  const parts = [
    ["time", new Date().toLocaleTimeString()],
    ["kind", kind],
    ["channel", channel || ""],
    ["detail", detail],
  ];
  for (const [cls, text] of parts) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text;
    item.append(span);
  }
  const list = $("log");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 24;
  list.append(item);
  // Follow new lines only when the person has not scrolled up to read older ones.
  if (atBottom) list.scrollTop = list.scrollHeight;
  $("log-empty").hidden = true;
}

// Read an HTTP error the way the API writes it: `{"error": "text"}` from the control plane,
// `{"error": {"code", "message"}}` from the engine's publish method.
function errorText(json, status) {
  const err = json && json.error;
  if (!err) return "HTTP " + status;
  if (typeof err === "string") return err + " (HTTP " + status + ")";
  return "error " + err.code + " " + err.message;
}

async function postJSON(path, body) {
  const key = $("api-key").value.trim();
  if (!key) throw new Error("enter the project's server API key first");
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: "apikey " + key },
    body: JSON.stringify(body),
  });
  const json = await response.json().catch(() => ({}));
  // The publish endpoint answers engine errors with 200 and an `error` object.
  if (!response.ok || json.error) throw new Error(errorText(json, response.status));
  return json;
}

// What a WebSocket close code means for a Centrifuge client.
function closeMeaning(code) {
  if (code === 1000) return "closed normally";
  if (code === 1006) return "connection lost without a close frame (network, proxy or server down)";
  if (code >= 3000 && code < 3500) return "server disconnect: a client would reconnect";
  if (code >= 3500 && code < 4000) return "server disconnect: a client must not reconnect";
  if (code >= 4000 && code < 4500) return "application disconnect: a client would reconnect";
  if (code >= 4500 && code < 5000) return "application disconnect: a client must not reconnect";
  return "transport close";
}

function userId() {
  return $("user-id").value.trim();
}

function channelName() {
  return $("channel").value.trim();
}

// Publications carry arbitrary JSON. Show `text` first when there is one, then the rest.
function describeData(data) {
  if (data && typeof data === "object" && typeof data.text === "string") {
    const rest = { ...data };
    delete rest.text;
    return Object.keys(rest).length ? data.text + "  " + JSON.stringify(rest) : data.text;
  }
  return JSON.stringify(data);
}

// --- protocol ------------------------------------------------------------------------------

function send(command, onReply) {
  const id = nextId++;
  pending.set(id, onReply);
  socket.send(JSON.stringify({ id, ...command }));
}

function handleReply(reply) {
  if (reply.id) {
    const callback = pending.get(reply.id);
    pending.delete(reply.id);
    if (callback) callback(reply);
    return;
  }
  const push = reply.push;
  if (!push) {
    // A reply with neither id nor push (`{}`) is the server's ping. The connect result said
    // `pong: true`, so answer with an empty command, or the server closes with 3012 (no pong).
    if (Object.keys(reply).length === 0) {
      socket.send("{}");
      pings += 1;
      $("ping-count").textContent = "pings answered: " + pings;
    }
    return;
  }
  const channel = push.channel;
  if (push.pub) {
    const pub = push.pub;
    let detail = describeData(pub.data);
    if (pub.tags) detail += "  tags=" + JSON.stringify(pub.tags);
    if (pub.offset) detail += "  offset=" + pub.offset;
    if (pub.info && pub.info.user) detail += "  from=" + pub.info.user;
    log("publication", channel, detail);
    setStep("messages", "done", "Publications are arriving on the socket.");
  } else if (push.join) {
    log("join", channel, "user " + push.join.info.user + " client " + push.join.info.client);
  } else if (push.leave) {
    log("leave", channel, "user " + push.leave.info.user + " client " + push.leave.info.client);
  } else if (push.unsubscribe) {
    log("unsubscribed", channel, "code " + push.unsubscribe.code + " " + (push.unsubscribe.reason || ""));
  } else if (push.subscribe) {
    log("subscribed", channel, "by the server");
  } else if (push.refresh) {
    log("refresh", channel, "connection ttl now " + push.refresh.ttl + " s");
  } else {
    log("push", channel, JSON.stringify(push));
  }
}

function connect() {
  const token = $("token").value.trim();
  if (!token) {
    setStep("token", "failed", "Get a token or paste one first.");
    return;
  }
  if (socket) socket.close(1000, "reconnecting");
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + "/realtime/connection/websocket");
  socket = ws;
  pending.clear();
  pings = 0;
  $("ping-count").textContent = "";
  setStep("connect", "busy", "Connecting to " + ws.url + " …");
  // Every handler checks `ws === socket`: events of a socket this page has already replaced
  // (Connect clicked twice) must not touch the state of the new one.
  ws.onopen = () => {
    if (ws !== socket) return;
    send({ connect: { token, name: "xshathra-test-page" } }, (reply) => {
      if (reply.error) {
        setStep("connect", "failed",
          "Connect refused: error " + reply.error.code + " " + reply.error.message + ".");
        if (reply.error.code === 109) setStep("token", "failed", "The token has expired: get a new one.");
        return;
      }
      const result = reply.connect;
      if ($("step-token").dataset.state !== "done") setStep("token", "done", "Token accepted.");
      setStep("connect", "done", "Connected as client " + result.client +
        (result.ping ? ", server pings every " + result.ping + " s." : "."));
      log("connected", "", "client " + result.client + (result.expires ? ", expires in " + result.ttl + " s" : ""));
      // Channels from the token's `channels` claim are subscribed by the server at connect.
      for (const channel of Object.keys(result.subs || {})) log("subscribed", channel, "from the token");
    });
  };
  // One frame may carry several replies, one JSON document per line.
  ws.onmessage = (event) => {
    if (ws !== socket) return;
    for (const line of String(event.data).split("\n")) {
      if (!line.trim()) continue;
      let reply;
      try {
        reply = JSON.parse(line);
      } catch {
        log("bad frame", "", line.slice(0, 200));
        continue;
      }
      handleReply(reply);
    }
  };
  ws.onerror = () => {
    // The browser gives no details here; the close event that follows has the code.
  };
  ws.onclose = (event) => {
    if (ws !== socket) return;
    socket = null;
    pending.clear();
    const reason = event.reason ? " \u201c" + event.reason + "\u201d" : "";
    const text = "Closed with code " + event.code + reason + ": " + closeMeaning(event.code) + ".";
    setStep("connect", event.code === 1000 ? "todo" : "failed", text);
    // 3500 is how the server refuses a token it cannot verify (bad signature, unknown app).
    if (event.code === 3500) setStep("token", "failed", "The server refused this token: " + (event.reason || "invalid token") + ".");
    if ($("step-subscribe").dataset.state === "done") setStep("subscribe", "todo", "Not subscribed: the connection closed.");
    log("closed", "", "code " + event.code + reason + " (" + closeMeaning(event.code) + ")");
  };
}

// --- buttons -------------------------------------------------------------------------------

$("get-token").addEventListener("click", async () => {
  setStep("token", "busy", "Asking /api/realtime/token …");
  try {
    const channels = $("token-channels").value.split(",").map((c) => c.trim()).filter(Boolean);
    const body = { userId: userId() };
    if (channels.length) body.channels = channels;
    const json = await postJSON("/api/realtime/token", body);
    $("token").value = json.token;
    setStep("token", "done", "Token issued for user " + body.userId + ", valid for " + json.expiresInSeconds + " s.");
  } catch (error) {
    setStep("token", "failed", "Token request failed: " + error.message + ".");
  }
});

$("token").addEventListener("input", () => {
  if ($("token").value.trim()) setStep("token", "todo", "Pasted token: Connect to try it.");
});

$("connect").addEventListener("click", connect);

$("disconnect").addEventListener("click", () => {
  if (socket) socket.close(1000, "closed by the page");
});

$("get-sub-token").addEventListener("click", async () => {
  const channel = channelName();
  setStep("subscribe", "busy", "Asking /api/realtime/subscription-token …");
  try {
    const json = await postJSON("/api/realtime/subscription-token", { userId: userId(), channel });
    $("sub-token").value = json.token;
    setStep("subscribe", "todo", "Subscription token issued for " + json.channel + ": Subscribe to use it.");
  } catch (error) {
    setStep("subscribe", "failed", "Subscription token request failed: " + error.message + ".");
  }
});

$("subscribe").addEventListener("click", () => {
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    setStep("subscribe", "failed", "Connect first.");
    return;
  }
  const channel = channelName();
  // join_leave asks for join/leave pushes where the channel's namespace has them on.
  const subscribe = { channel, join_leave: true };
  const token = $("sub-token").value.trim();
  if (token) subscribe.token = token;
  setStep("subscribe", "busy", "Subscribing to " + channel + " …");
  send({ subscribe }, (reply) => {
    if (reply.error) {
      setStep("subscribe", "failed",
        "Subscribe to " + channel + " refused: error " + reply.error.code + " " + reply.error.message + ".");
      return;
    }
    setStep("subscribe", "done", "Subscribed to " + channel + ".");
    log("subscribed", channel, reply.subscribe && reply.subscribe.offset ? "at offset " + reply.subscribe.offset : "");
  });
});

$("publish").addEventListener("click", async () => {
  const channel = channelName();
  try {
    await postJSON("/api/realtime/publish", {
      channel,
      data: { text: $("message-text").value, at: new Date().toISOString() },
    });
  } catch (error) {
    setStep("messages", "failed", "Publish to " + channel + " failed: " + error.message + ".");
  }
});

$("clear-log").addEventListener("click", () => {
  $("log").replaceChildren();
  $("log-empty").hidden = false;
});

// Opened from a project's dashboard page: `?app_id=` names the project and `?channel=` the
// channel to try. The link never carries a key or secret: the person pastes the server key.
(() => {
  const params = new URLSearchParams(location.search);
  const appId = params.get("app_id");
  const channel = params.get("channel");
  if (channel) $("channel").value = channel;
  if (appId) {
    const note = $("project-note");
    note.textContent = "Project " + appId + ": paste its server API key (from the dashboard) in step 1.";
    note.hidden = false;
    $("api-key").placeholder = "server API key of " + appId;
  }
})();
