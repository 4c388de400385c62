// Peer: Node's `ws` package. POST /publish sends the body to every client.
import http from "node:http";
import { WebSocketServer } from "ws";

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks).toString();
    for (const client of wss.clients) client.send(body);
    res.writeHead(200, { "Content-Length": 2 }).end("{}");
  });
});
const wss = new WebSocketServer({ server, perMessageDeflate: false });
server.listen(Number(process.argv[2]), "127.0.0.1", () => console.log("ready"));
