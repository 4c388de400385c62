-- Publish to a channel and, when history is kept, append to its stream in the same atomic step.
-- KEYS[1] history stream, KEYS[2] meta hash (e = epoch, s = last offset),
-- KEYS[3] idempotency key or "" (none).
-- ARGV[1] encoded publication, ARGV[2] history size (0: no history), ARGV[3] history ttl (s),
-- ARGV[4] PUB/SUB topic, ARGV[5] epoch to use if the channel has none yet, ARGV[6] meta ttl (s),
-- ARGV[7] idempotency ttl (s).
-- Returns "offset:epoch". The message published is "p<offset>:<epoch>:<payload>".
local stream, meta, idem = KEYS[1], KEYS[2], KEYS[3]
local size = tonumber(ARGV[2])

if idem ~= "" then
  local seen = redis.call("get", idem)
  if seen then
    return seen
  end
end

local offset, epoch = 0, ""
if size > 0 then
  epoch = redis.call("hget", meta, "e")
  if not epoch then
    epoch = ARGV[5]
    redis.call("hset", meta, "e", epoch)
  end
  offset = redis.call("hincrby", meta, "s", 1)
  -- The stream id is the offset itself, so readers can range over offsets directly.
  redis.call("xadd", stream, "MAXLEN", size, offset .. "-1", "d", ARGV[1])
  redis.call("expire", stream, tonumber(ARGV[3]))
  redis.call("expire", meta, tonumber(ARGV[6]))
end

local position = offset .. ":" .. epoch
redis.call("publish", ARGV[4], "p" .. position .. ":" .. ARGV[1])
if idem ~= "" then
  redis.call("set", idem, position, "EX", tonumber(ARGV[7]))
end
return position
