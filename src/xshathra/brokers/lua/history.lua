-- Read a channel's stream position and, optionally, publications after an offset.
-- KEYS[1] history stream, KEYS[2] meta hash.
-- ARGV[1] epoch to use if the channel has none yet, ARGV[2] meta ttl (s),
-- ARGV[3] first offset wanted (since + 1), ARGV[4] limit (0: position only, -1: all),
-- ARGV[5] "1" for newest first.
-- Returns {offset, epoch, id1, payload1, id2, payload2, ...}.
local stream, meta = KEYS[1], KEYS[2]
local epoch = redis.call("hget", meta, "e")
if not epoch then
  epoch = ARGV[1]
  redis.call("hset", meta, "e", epoch)
  redis.call("expire", meta, tonumber(ARGV[2]))
end
local offset = tonumber(redis.call("hget", meta, "s") or "0")
local result = {offset, epoch}
local limit = tonumber(ARGV[4])
if limit == 0 then
  return result
end
local entries
local first = ARGV[3] .. "-0"
if ARGV[5] == "1" then
  if limit > 0 then
    entries = redis.call("xrevrange", stream, "+", first, "COUNT", limit)
  else
    entries = redis.call("xrevrange", stream, "+", first)
  end
else
  if limit > 0 then
    entries = redis.call("xrange", stream, first, "+", "COUNT", limit)
  else
    entries = redis.call("xrange", stream, first, "+")
  end
end
for _, entry in ipairs(entries) do
  result[#result + 1] = entry[1]
  result[#result + 1] = entry[2][2]
end
return result
