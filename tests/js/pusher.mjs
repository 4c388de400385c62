// Drives the unmodified pusher-js client under Node for the Python test suite, as scenario.mjs
// does for centrifuge-js: config from the environment, commands as JSON lines on stdin, every
// client event printed as one JSON line on stdout.
//
//   XS_PORT      the server's port (host 127.0.0.1)
//   XS_KEY       the app's client_api_key (Pusher's key)
//   XS_SECRET    the app's app_secret: channel and user auth are signed here, as the app's
//                backend would sign them (a wrong secret gives a bad signature)
//   XS_USER      the presence user id (default js-user)
//   XS_MASTER_KEY  base64 encryption master key: private-encrypted- channels get their shared
//                secret from it, as Pusher's server libraries derive it
import Pusher from "pusher-js";
import readline from "node:readline";
import { createHash, createHmac } from "node:crypto";

const env = process.env;
const emit = (event, fields = {}) => console.log(JSON.stringify({ event, ...fields }));
const sign = (text) => createHmac("sha256", env.XS_SECRET).update(text).digest("hex");
const user = env.XS_USER ?? "js-user";

const pusher = new Pusher(env.XS_KEY, {
  cluster: "local",
  wsHost: "127.0.0.1",
  wsPort: Number(env.XS_PORT),
  forceTLS: false,
  enabledTransports: ["ws"],
  disableStats: true,
  channelAuthorization: {
    customHandler: ({ socketId, channelName }, callback) => {
      let text = `${socketId}:${channelName}`;
      const result = {};
      if (channelName.startsWith("presence-")) {
        result.channel_data = JSON.stringify({ user_id: user, user_info: { name: `name-${user}` } });
        text += `:${result.channel_data}`;
      }
      result.auth = `${env.XS_KEY}:${sign(text)}`;
      if (channelName.startsWith("private-encrypted-")) {
        const master = Buffer.from(env.XS_MASTER_KEY ?? "", "base64");
        result.shared_secret = createHash("sha256")
          .update(Buffer.concat([Buffer.from(channelName), master]))
          .digest("base64");
      }
      callback(null, result);
    },
  },
  userAuthentication: {
    customHandler: ({ socketId }, callback) => {
      const user_data = JSON.stringify({ id: user });
      callback(null, { auth: `${env.XS_KEY}:${sign(`${socketId}::user::${user_data}`)}`, user_data });
    },
  },
});

pusher.connection.bind("state_change", ({ previous, current }) => emit("state", { previous, current }));
pusher.connection.bind("connected", () => emit("connected", { socket_id: pusher.connection.socket_id }));
pusher.connection.bind("error", (err) =>
  emit("conn_error", { type: err?.type ?? null, code: err?.data?.code ?? err?.error?.data?.code ?? null,
                        message: err?.data?.message ?? err?.error?.data?.message ?? null }),
);
pusher.bind("pusher:signin_success", (data) => {
  emit("signin_success", { data });
  // pusher-js subscribes the user's own channel itself; its answer is a network round trip
  // away, so binding on the next tick is in time.
  setImmediate(() =>
    pusher.user.serverToUserChannel?.bind("pusher:subscription_succeeded", () =>
      emit("user_channel_subscribed"),
    ),
  );
});
pusher.user.bind_global((name, data) => emit("user_message", { name, data }));

const channels = {};
function subscribe(name) {
  const channel = pusher.subscribe(name);
  channels[name] = channel;
  channel.bind("pusher:subscription_succeeded", (data) =>
    emit("subscribed", { channel: name, members: data?.count !== undefined ? { count: data.count, ids: Object.keys(data.members) } : null }),
  );
  channel.bind("pusher:subscription_error", (data) => emit("sub_error", { channel: name, ...data }));
  channel.bind("pusher:member_added", (m) => emit("member_added", { channel: name, id: m.id, info: m.info }));
  channel.bind("pusher:member_removed", (m) => emit("member_removed", { channel: name, id: m.id }));
  channel.bind("pusher:cache_miss", () => emit("cache_miss", { channel: name }));
  channel.bind("pusher:subscription_count", (d) =>
    emit("subscription_count", { channel: name, count: d.subscription_count, kept: channel.subscriptionCount ?? null }),
  );
  channel.bind_global((name_, data, metadata) => {
    if (name_.startsWith("pusher:")) return;
    emit("message", { channel: name, name: name_, data, user_id: metadata?.user_id ?? null });
  });
}

const commands = {
  async subscribe({ channel }) { subscribe(channel); },
  async unsubscribe({ channel }) { pusher.unsubscribe(channel); emit("unsubscribed", { channel }); },
  async trigger({ channel, name, data }) { emit("triggered", { ok: channels[channel].trigger(name, data) }); },
  async signin() { pusher.signin(); },
  async raw({ text }) { pusher.connection.connection.transport.socket.send(text); },
  async disconnect() { pusher.disconnect(); },
  async exit() { pusher.disconnect(); emit("bye"); process.exit(0); },
};

readline.createInterface({ input: process.stdin }).on("line", async (line) => {
  const message = JSON.parse(line);
  try {
    await commands[message.cmd](message);
  } catch (error) {
    emit("command_error", { cmd: message.cmd, message: String(error?.message ?? error) });
  }
});
process.stdin.on("end", () => process.exit(0));
// Never hang a test run: a client still alive after a minute ends itself.
setTimeout(() => { emit("timeout"); process.exit(2); }, 60_000).unref();
