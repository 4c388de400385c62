// Drives the unmodified centrifuge-js client under Node for the Python test suite.
// Config comes from the environment; commands arrive as JSON lines on stdin; every client
// event is printed as one JSON line on stdout for the test to assert on.
//
//   XS_BASE        http://HOST:PORT of the server (token endpoints)
//   XS_WS          WebSocket address (default: the engine endpoint of XS_BASE)
//   XS_API_KEY     the app's api_key, to mint tokens through /api/realtime/*token
//   XS_USER        user id (default js-user); XS_CHANNEL channel (default public:js)
//   XS_TTL         connection token ttl in seconds (default 900)
//   XS_CHANNELS    comma-separated server-side channels for the connection token's claim
//   XS_APP_ID, XS_APP_SECRET  sign tokens locally with the app_secret (the app backend's way)
//   XS_SUB_TOKEN   "1": the subscription gets its token through getToken (private channels)
//   XS_SUB_TTL     subscription token ttl when signed locally (default 900)
//   XS_NO_SUBSCRIBE "1": do not subscribe at start (the test sends `subscribe`)
//   XS_TRANSPORT   "http_stream" or "sse": bidirectional emulation instead of WebSocket, the
//                  stream on XS_BASE, commands to XS_EMULATION (default XS_BASE's endpoint)
//   XS_NO_TOKEN    "1": connect without a token (the app's connect proxy decides)
//   XS_CONNECT_DATA JSON sent as the connect request's data (to a connect proxy)
//   XS_SUB_OPTIONS JSON merged into the subscription's options (delta, since, tagsFilter...)
//   XS_PROTOBUF    "1": the protobuf build (`centrifuge/build/protobuf`, binary frames); data
//                  is then bytes both ways: published as the JSON text's UTF-8, and printed
//                  parsed from it (as a string when it is not JSON)
import { EventSource } from "eventsource";
import WebSocket from "ws";
import readline from "node:readline";
import { createHmac } from "node:crypto";

const env = process.env;
const { XS_BASE, XS_API_KEY, XS_APP_ID, XS_APP_SECRET } = env;
const XS_USER = env.XS_USER ?? "js-user";
const XS_CHANNEL = env.XS_CHANNEL ?? "public:js";
const XS_TTL = Number(env.XS_TTL ?? "900");
const XS_SUB_TTL = Number(env.XS_SUB_TTL ?? "900");
const XS_CHANNELS = env.XS_CHANNELS ? env.XS_CHANNELS.split(",") : [];
const XS_WS = env.XS_WS ?? `${XS_BASE.replace(/^http/, "ws")}/realtime/connection/websocket`;

const PROTOBUF = env.XS_PROTOBUF === "1";
const { Centrifuge } = PROTOBUF
  ? await import("centrifuge/build/protobuf")
  : await import("centrifuge");
// Payloads as this build takes and gives them: JSON values, or bytes in the protobuf build.
const toWire = (value) => (PROTOBUF ? new TextEncoder().encode(JSON.stringify(value)) : value);
function fromWire(data) {
  if (!PROTOBUF || !(data instanceof Uint8Array)) return data;
  const text = new TextDecoder().decode(data);
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

const emit = (event, fields = {}) => console.log(JSON.stringify({ event, ...fields }));

// What an app's backend does to mint a token without calling us: HS256 with its app_secret.
function signLocally(claims, ttl) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64({ sub: XS_USER, app_id: XS_APP_ID, iat: now, exp: now + ttl, ...claims });
  const signature = createHmac("sha256", XS_APP_SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${signature}`;
}

async function mint(path, body) {
  const response = await fetch(`${XS_BASE}${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `apikey ${XS_API_KEY}` },
    body: JSON.stringify(body),
  });
  return (await response.json()).token;
}

let tokenCalls = 0;
async function getToken() {
  tokenCalls += 1;
  const claims = XS_CHANNELS.length ? { channels: XS_CHANNELS } : {};
  const token = XS_APP_SECRET
    ? signLocally(claims, XS_TTL)
    : await mint("/api/realtime/token", { userId: XS_USER, ttlSeconds: XS_TTL, ...claims });
  emit("token", { calls: tokenCalls });
  return token;
}

let subTokenCalls = 0;
async function getSubToken(ctx) {
  subTokenCalls += 1;
  const token = XS_APP_SECRET
    ? signLocally({ channel: ctx.channel }, XS_SUB_TTL)
    : await mint("/api/realtime/subscription-token", { userId: XS_USER, channel: ctx.channel });
  emit("sub_token", { calls: subTokenCalls, channel: ctx.channel });
  return token;
}

const XS_TRANSPORT = env.XS_TRANSPORT ?? "websocket";
const XS_EMULATION = env.XS_EMULATION ?? `${XS_BASE}/realtime/emulation`;
const endpoints =
  XS_TRANSPORT === "websocket"
    ? XS_WS
    : [{ transport: XS_TRANSPORT, endpoint: `${XS_BASE}/realtime/connection/${XS_TRANSPORT}` }];
const clientOptions = {
  websocket: WebSocket,
  eventsource: EventSource,
  emulationEndpoint: XS_EMULATION,
  minReconnectDelay: 100,
};
if (env.XS_NO_TOKEN !== "1") clientOptions.getToken = getToken;
if (env.XS_CONNECT_DATA) clientOptions.data = JSON.parse(env.XS_CONNECT_DATA);
const client = new Centrifuge(endpoints, clientOptions);
client.on("connected", (ctx) => emit("transport", { name: ctx.transport }));
client.on("connecting", (ctx) => emit("connecting", { code: ctx.code, reason: ctx.reason }));
client.on("connected", (ctx) => emit("connected", { client: ctx.client, data: ctx.data ?? null }));
client.on("disconnected", (ctx) => emit("disconnected", { code: ctx.code, reason: ctx.reason }));
client.on("error", (ctx) => emit("client_error", { message: String(ctx.error?.message ?? ctx) }));
client.on("subscribed", (ctx) =>
  emit("server_subscribed", {
    channel: ctx.channel,
    recoverable: ctx.recoverable,
    wasRecovering: ctx.wasRecovering,
    recovered: ctx.recovered,
  }),
);
client.on("publication", (ctx) =>
  emit("server_publication", { channel: ctx.channel, data: fromWire(ctx.data), offset: ctx.offset }),
);

const subOptions = { joinLeave: true };
if (env.XS_SUB_TOKEN === "1") subOptions.getToken = getSubToken;
if (env.XS_SUB_OPTIONS) Object.assign(subOptions, JSON.parse(env.XS_SUB_OPTIONS));
const sub = client.newSubscription(XS_CHANNEL, subOptions);
sub.on("subscribing", (ctx) => emit("subscribing", { code: ctx.code, reason: ctx.reason }));
sub.on("subscribed", (ctx) =>
  emit("subscribed", {
    recoverable: ctx.recoverable,
    wasRecovering: ctx.wasRecovering,
    recovered: ctx.recovered,
    offset: ctx.streamPosition?.offset ?? null,
    epoch: ctx.streamPosition?.epoch ?? null,
  }),
);
sub.on("publication", (ctx) =>
  emit("publication", {
    data: fromWire(ctx.data),
    tags: ctx.tags ?? null,
    offset: ctx.offset,
    user: ctx.info?.user ?? null,
  }),
);
sub.on("join", (ctx) => emit("join", { user: ctx.info.user }));
sub.on("leave", (ctx) => emit("leave", { user: ctx.info.user }));
sub.on("error", (ctx) => emit("sub_error", { code: ctx.error?.code }));
sub.on("unsubscribed", (ctx) => emit("unsubscribed", { code: ctx.code, reason: ctx.reason }));

const commands = {
  async connect() { client.connect(); },
  async disconnect() { client.disconnect(); emit("disconnect_called"); },
  async subscribe() { sub.subscribe(); },
  async presence() {
    const result = await sub.presence();
    emit("presence", { users: Object.values(result.clients).map((c) => c.user) });
  },
  async presence_stats() {
    const result = await sub.presenceStats();
    emit("presence_stats", { clients: result.numClients, users: result.numUsers });
  },
  async history({ limit, reverse = false }) {
    const result = await sub.history({ limit, reverse });
    emit("history", {
      data: result.publications.map((p) => fromWire(p.data)),
      offsets: result.publications.map((p) => p.offset),
      offset: result.offset,
    });
  },
  async publish({ data }) {
    await sub.publish(toWire(data));
    emit("published");
  },
  async rpc({ method, data }) {
    const result = await client.rpc(method, data);
    emit("rpc", { data: result.data });
  },
  async send({ data }) {
    await client.send(data);
    emit("sent");
  },
  async state() { emit("state", { client: client.state, sub: sub.state }); },
  async delta_stats() { emit("delta_stats", sub.deltaStats()); },
  async exit() { client.disconnect(); emit("bye"); process.exit(0); },
};

readline.createInterface({ input: process.stdin }).on("line", async (line) => {
  const message = JSON.parse(line);
  try {
    await commands[message.cmd](message);
  } catch (error) {
    emit("command_error", { cmd: message.cmd, code: error?.code, message: String(error?.message) });
  }
});
// The test closing our stdin means it is done with us.
process.stdin.on("end", () => process.exit(0));

if (env.XS_NO_SUBSCRIBE !== "1") sub.subscribe();
client.connect();
// Never hang a test run: a scenario that is still alive after a minute ends itself.
setTimeout(() => { emit("timeout"); process.exit(2); }, 60_000).unref();
