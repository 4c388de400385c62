// The project's live console: a small Centrifuge client protocol v2 (JSON) client of our own,
// as on /socket-auth-test.html. The dashboard mints a short-lived connection token for the
// signed-in member whose `channels` claim subscribes it to the watched channel on the server
// side; publications, joins and leaves of that channel are shown as they arrive.
"use strict";

// The app's lifecycle events (every channel, every node): Server-Sent Events from the
// dashboard's /console/events, which EventSource reconnects by itself.
document.addEventListener("DOMContentLoaded", () => {
  const section = document.querySelector("[data-app-events]");
  if (!section) return;
  const state = section.querySelector("[data-events-state]");
  const list = section.querySelector("[data-events-log]");
  const empty = section.querySelector("[data-events-empty]");
  const toggle = section.querySelector("[data-events-toggle]");
  const words = {
    connected: "connected",
    disconnected: "disconnected",
    subscribed: "subscribed",
    unsubscribed: "unsubscribed",
  };
  let source = null;

  function line(kind, detail) {
    const item = document.createElement("li");
    for (const [cls, text] of [["time", new Date().toLocaleTimeString()], ["kind", kind], ["detail", detail]]) {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = text; // never markup: user ids and channels come from clients
      item.append(span);
    }
    list.append(item);
    while (list.children.length > 500) list.firstElementChild.remove();
    list.scrollTop = list.scrollHeight;
    empty.hidden = true;
  }

  function start() {
    source = new EventSource(section.dataset.appEvents);
    state.textContent = "Connecting…";
    toggle.textContent = "Pause app events";
    source.addEventListener("ready", () => {
      state.textContent = "Live: connections and subscriptions on every node.";
    });
    source.addEventListener("lifecycle", (message) => {
      const e = JSON.parse(message.data);
      const parts = ["user " + (e.user || "(anonymous)"), "client " + e.client, "over " + e.transport];
      if (e.channel) parts.unshift("channel " + e.channel);
      parts.push("on node " + e.node);
      line(words[e.kind] || e.kind, parts.join(", "));
    });
    source.addEventListener("dropped", (message) => {
      line("dropped", JSON.parse(message.data).count + " events were too many to show");
    });
    source.onerror = () => {
      state.textContent = "Connection lost: reconnecting…";
    };
  }

  toggle.hidden = false;
  toggle.addEventListener("click", () => {
    if (source) {
      source.close();
      source = null;
      state.textContent = "Paused.";
      toggle.textContent = "Resume app events";
    } else {
      start();
    }
  });
  start();
});

document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("console");
  if (!root) return;
  const q = (selector) => document.querySelector(selector);
  const watchForm = q("[data-watch]");
  const stopButton = q("[data-stop]");
  const state = q("[data-console-state]");
  const list = q("[data-log]");
  const empty = q("[data-log-empty]");
  const csrf = q("[data-token-form] input[name=csrf_token]").value;
  let socket = null;
  let watching = "";
  let retries = 0;
  let nextId = 1;

  state.textContent = "Not watching. Choose a channel and press Watch channel.";

  // Always textContent: whatever the channel carries is shown as text, never as markup.
  function log(kind, detail) {
    const item = document.createElement("li");
    for (const [cls, text] of [["time", new Date().toLocaleTimeString()], ["kind", kind], ["detail", detail]]) {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = text;
      item.append(span);
    }
    list.append(item);
    while (list.children.length > 200) list.firstElementChild.remove();
    list.scrollTop = list.scrollHeight;
    empty.hidden = true;
  }

  async function post(url, fields) {
    const body = new URLSearchParams({ csrf_token: csrf, ...fields });
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { Accept: "application/json" },
      body,
    });
    const json = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(json.error || "HTTP " + response.status);
    return json;
  }

  function stop(text) {
    const ws = socket;
    socket = null;
    watching = "";
    if (ws) ws.close(1000, "stopped");
    stopButton.hidden = true;
    state.textContent = text;
  }

  function handle(reply, ws) {
    if (!reply.id && !reply.push) {
      if (Object.keys(reply).length === 0) ws.send("{}"); // the server's ping: answer it
      return;
    }
    if (reply.id) {
      if (reply.error) {
        state.textContent = "The engine refused the connection: " + reply.error.message + ".";
        return;
      }
      retries = 0;
      const subs = (reply.connect && reply.connect.subs) || {};
      if (!(watching in subs)) {
        // The engine skips a channel it cannot subscribe (a name outside the grammar).
        stop("The engine did not subscribe to " + watching + ": check the channel name (like public:lobby or chat:room-1).");
        return;
      }
      state.textContent = "Watching " + watching + ": live.";
      log("watching", watching);
      return;
    }
    const push = reply.push;
    if (push.pub) {
      const pub = push.pub;
      let detail = JSON.stringify(pub.data);
      if (pub.tags && pub.tags.event) detail = pub.tags.event + "  " + detail;
      log("publication", detail);
    } else if (push.join) {
      log("join", "user " + push.join.info.user + " (client " + push.join.info.client + ")");
    } else if (push.leave) {
      log("leave", "user " + push.leave.info.user + " (client " + push.leave.info.client + ")");
    } else if (push.unsubscribe) {
      log("unsubscribed", push.unsubscribe.reason || "by the server");
    } else if (push.disconnect) {
      log("disconnected", push.disconnect.reason || "by the server");
    }
  }

  async function watch(channel) {
    stop("Connecting…");
    watching = channel;
    let token;
    try {
      token = (await post(root.dataset.tokenUrl, { channel })).token;
    } catch (error) {
      stop("Could not watch: " + error.message);
      return;
    }
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + "/realtime/connection/websocket");
    socket = ws;
    stopButton.hidden = false;
    ws.onopen = () => ws.send(JSON.stringify({ id: nextId++, connect: { token, name: "xshathra-dashboard" } }));
    ws.onmessage = (event) => {
      if (ws !== socket) return;
      for (const line of String(event.data).split("\n")) {
        if (line.trim()) handle(JSON.parse(line), ws);
      }
    };
    ws.onclose = (event) => {
      if (ws !== socket) return;
      socket = null;
      // Lost (not stopped): reconnect with a fresh token, a few times, a little later each.
      if (retries < 5 && event.code !== 1000) {
        retries += 1;
        state.textContent = "Connection lost (code " + event.code + "); reconnecting…";
        setTimeout(() => { if (!socket && watching === channel) watch(channel); }, 1000 * retries);
      } else {
        stop("Stopped (code " + event.code + ").");
      }
    };
  }

  watchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const channel = watchForm.elements.channel.value.trim();
    if (channel) watch(channel);
  });
  stopButton.addEventListener("click", () => stop("Not watching."));

  const publishForm = q("[data-publish]");
  if (publishForm) {
    const publishState = q("[data-publish-state]");
    publishForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const fields = Object.fromEntries(new FormData(publishForm));
      delete fields.csrf_token;
      publishState.textContent = "Publishing…";
      try {
        const result = await post(publishForm.action, fields);
        publishState.textContent = "Published to " + result.subscribers + " subscriber" + (result.subscribers === 1 ? "" : "s") + ".";
      } catch (error) {
        publishState.textContent = "Not published: " + error.message;
      }
    });
  }

  // Opened with ?channel=...: start watching at once.
  if (new URLSearchParams(location.search).has("channel")) watch(watchForm.elements.channel.value.trim());
});
