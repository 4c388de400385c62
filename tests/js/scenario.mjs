// Drives the unmodified centrifuge-js client under Node for the Python test suite.
// Config comes from the environment; commands arrive as JSON lines on stdin; every client
// event is printed as one JSON line on stdout for the test to assert on.
import { Centrifuge } from "centrifuge";
import WebSocket from "ws";
import readline from "node:readline";
import { createHmac } from "node:crypto";

const { XS_BASE, XS_API_KEY, XS_USER = "js-user", XS_CHANNEL = "public:js", XS_TTL = "900" } =
  process.env;
const { XS_APP_ID, XS_APP_SECRET } = process.env;

const emit = (event, fields = {}) => console.log(JSON.stringify({ event, ...fields }));

// What an app's backend does to mint a token without calling us: HS256 with its app_secret.
function signLocally(ttl) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64({ sub: XS_USER, app_id: XS_APP_ID, iat: now, exp: now + ttl });
  const signature = createHmac("sha256", XS_APP_SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${signature}`;
}

let tokenCalls = 0;
async function getToken() {
  tokenCalls += 1;
  if (XS_APP_SECRET) {
    emit("token", { calls: tokenCalls });
    return signLocally(Number(XS_TTL));
  }
  const response = await fetch(`${XS_BASE}/api/realtime/token`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `apikey ${XS_API_KEY}` },
    body: JSON.stringify({ userId: XS_USER, ttlSeconds: Number(XS_TTL) }),
  });
  const body = await response.json();
  emit("token", { calls: tokenCalls });
  return body.token;
}

const client = new Centrifuge(`${XS_BASE.replace(/^http/, "ws")}/realtime/connection/websocket`, {
  websocket: WebSocket,
  getToken,
});
client.on("connected", (ctx) => emit("connected", { client: ctx.client }));
client.on("disconnected", (ctx) => emit("disconnected", { code: ctx.code, reason: ctx.reason }));
client.on("error", (ctx) => emit("client_error", { message: String(ctx.error?.message ?? ctx) }));

const sub = client.newSubscription(XS_CHANNEL, { joinLeave: true });
sub.on("subscribed", (ctx) =>
  emit("subscribed", {
    recoverable: ctx.recoverable,
    wasRecovering: ctx.wasRecovering,
    recovered: ctx.recovered,
  }),
);
sub.on("publication", (ctx) =>
  emit("publication", { data: ctx.data, tags: ctx.tags ?? null, offset: ctx.offset }),
);
sub.on("join", (ctx) => emit("join", { user: ctx.info.user }));
sub.on("leave", (ctx) => emit("leave", { user: ctx.info.user }));
sub.on("error", (ctx) => emit("sub_error", { code: ctx.error?.code }));
sub.on("unsubscribed", (ctx) => emit("unsubscribed", { code: ctx.code }));

const commands = {
  async connect() { client.connect(); },
  async disconnect() { client.disconnect(); emit("disconnect_called"); },
  async presence() {
    const result = await sub.presence();
    emit("presence", { users: Object.values(result.clients).map((c) => c.user) });
  },
  async presence_stats() {
    const result = await sub.presenceStats();
    emit("presence_stats", { clients: result.numClients, users: result.numUsers });
  },
  async history({ limit }) {
    const result = await sub.history({ limit });
    emit("history", { data: result.publications.map((p) => p.data), offset: result.offset });
  },
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

sub.subscribe();
client.connect();
// Never hang a test run: a scenario that is still alive after a minute ends itself.
setTimeout(() => { emit("timeout"); process.exit(2); }, 60_000).unref();
