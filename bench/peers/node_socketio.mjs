// Peer: Node socket.io. POST /publish emits the body, as one string, to every client as event
// "msg" (what peers/py_socketio.py does with python-socketio).
import http from "node:http";
import { Server } from "socket.io";

// socket.io takes the requests under /socket.io/ and hands every other one to this handler.
const server = http.createServer((req, res) => {
  if (req.method !== "POST" || req.url !== "/publish") {
    res.writeHead(404, { "Content-Length": 0 }).end();
    return;
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    io.emit("msg", Buffer.concat(chunks).toString());
    res.writeHead(200, { "Content-Length": 2 }).end("{}");
  });
});
// WebSocket only, no compression, no client bundle: the load client speaks the protocol itself.
const io = new Server(server, {
  transports: ["websocket"],
  perMessageDeflate: false,
  serveClient: false,
});
server.listen(Number(process.argv[2]), "127.0.0.1", () => console.log("ready"));
