-- Publish several publications of one channel at once (none with an idempotency key, all with
-- the same history size and ttl), as publish.lua does for one: appended to the stream, when
-- the channel keeps history, in the same atomic step as the one PUB/SUB message that carries
-- them all, in order, at consecutive offsets.
--
-- KEYS[1] history stream (entry id = offset), KEYS[2] meta hash (e = epoch, s = top offset).
-- ARGV[1] the encoded publications as one msgpack array of byte strings (what subscribers
-- get), ARGV[2] history size (0: no history), ARGV[3] history ttl in seconds (0: keep),
-- ARGV[4] PUB/SUB topic, ARGV[5] epoch to start if the channel has none, ARGV[6] meta ttl in
-- seconds, ARGV[7..] the same publications one by one (what the stream keeps; Redis's Lua
-- msgpack cannot read msgpack's bin type).
--
-- Returns "<first offset>:<epoch>" and publishes "b<first offset>:<epoch>:<ARGV[1]>" to the
-- topic (offset 0 and no epoch without history).
local stream, meta = KEYS[1], KEYS[2]
local count = #ARGV - 6
local size = tonumber(ARGV[2])
local first, epoch = 0, ""
if size > 0 then
  epoch = redis.call("hget", meta, "e")
  if not epoch then
    epoch = ARGV[5]
    redis.call("hset", meta, "e", epoch)
    redis.call("del", stream)  -- as in publish.lua: a new epoch voids what an older one left
  end
  local last = redis.call("hincrby", meta, "s", count)
  first = last - count + 1
  for i = 1, count do
    redis.call("xadd", stream, "MAXLEN", size, first + i - 1, "d", ARGV[6 + i])
  end
  local ttl = tonumber(ARGV[3])
  if ttl > 0 then
    redis.call("expire", stream, ttl)
  else
    redis.call("persist", stream)
  end
  redis.call("expire", meta, math.max(tonumber(ARGV[6]), ttl))
end

local position = first .. ":" .. epoch
redis.call("publish", ARGV[4], "b" .. position .. ":" .. ARGV[1])
return position
