-- Publish one publication and, when the channel keeps history, append it to the channel's
-- stream in the same atomic step: history never holds an entry that was not published, and a
-- subscriber never receives an offset that history does not know.
--
-- KEYS[1] history stream (entry id = offset), KEYS[2] meta hash (e = epoch, s = top offset),
-- KEYS[3] idempotency key, or "" for none.
-- ARGV[1] encoded publication, ARGV[2] history size (0: no history), ARGV[3] history ttl in
-- seconds (0: keep), ARGV[4] PUB/SUB topic, ARGV[5] epoch to start if the channel has none,
-- ARGV[6] meta ttl in seconds, ARGV[7] idempotency ttl in seconds.
--
-- Returns "<offset>:<epoch>" and publishes "p<offset>:<epoch>:<publication>" to the topic.
local stream, meta, idem = KEYS[1], KEYS[2], KEYS[3]

if idem ~= "" then
  local first = redis.call("get", idem)
  if first then
    -- Seen within the idempotency window: answer as the first time, publish nothing.
    return first
  end
end

local size = tonumber(ARGV[2])
local offset, epoch = 0, ""
if size > 0 then
  epoch = redis.call("hget", meta, "e")
  if not epoch then
    epoch = ARGV[5]
    redis.call("hset", meta, "e", epoch)
    -- A new epoch voids what an older one left behind (meta evicted or expired while the
    -- stream was not); its ids would also be above the offsets we are about to write.
    redis.call("del", stream)
  end
  offset = redis.call("hincrby", meta, "s", 1)
  redis.call("xadd", stream, "MAXLEN", size, offset, "d", ARGV[1])
  local ttl = tonumber(ARGV[3])
  if ttl > 0 then
    redis.call("expire", stream, ttl)
  else
    redis.call("persist", stream)
  end
  -- The epoch outlives the stream: a client that comes back after the publications expired
  -- keeps a comparable position (same epoch, offsets continue) instead of a new epoch.
  redis.call("expire", meta, math.max(tonumber(ARGV[6]), ttl))
end

local position = offset .. ":" .. epoch
redis.call("publish", ARGV[4], "p" .. position .. ":" .. ARGV[1])
if idem ~= "" then
  redis.call("set", idem, position, "EX", tonumber(ARGV[7]))
end
return position
