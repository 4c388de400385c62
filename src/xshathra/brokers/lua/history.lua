-- A channel's stream position and, optionally, publications from its stream.
--
-- KEYS[1] history stream (entry id = offset), KEYS[2] meta hash (e = epoch, s = top offset).
-- ARGV[1] epoch to start if the channel has none, ARGV[2] meta ttl in seconds,
-- ARGV[3] limit (0: position only, > 0: at most that many, < 0: all kept),
-- ARGV[4] "1" for newest first, ARGV[5] where to start: oldest first, the lowest offset
-- wanted ("-": from the oldest kept); newest first, the highest offset wanted ("+": from the
-- newest), ARGV[6] the epoch the caller's `since` belongs to, or "" when there is no `since`.
--
-- Returns {top offset, epoch, id1, publication1, id2, publication2, ...}; no publications when
-- the caller's epoch is not the current one (its offsets mean nothing here).
local stream, meta = KEYS[1], KEYS[2]

local fields = redis.call("hmget", meta, "e", "s")
local epoch = fields[1]
local offset = fields[2] and tonumber(fields[2]) or 0
if not epoch then
  -- Start an epoch now, so a position handed out before the first publish stays comparable.
  epoch = ARGV[1]
  offset = 0
  redis.call("hset", meta, "e", epoch)
  redis.call("del", stream)  -- entries of a lost epoch must not appear under this one
end

-- Keep the epoch while the channel is read, without shortening a longer ttl set by publish.
local meta_ttl = tonumber(ARGV[2])
if redis.call("ttl", meta) < meta_ttl then
  redis.call("expire", meta, meta_ttl)
end

local result = {offset, epoch}
local limit = tonumber(ARGV[3])
if limit == 0 or (ARGV[6] ~= "" and ARGV[6] ~= epoch) then
  return result
end

local entries
if ARGV[4] == "1" then
  if limit > 0 then
    entries = redis.call("xrevrange", stream, ARGV[5], "-", "COUNT", limit)
  else
    entries = redis.call("xrevrange", stream, ARGV[5], "-")
  end
else
  if limit > 0 then
    entries = redis.call("xrange", stream, ARGV[5], "+", "COUNT", limit)
  else
    entries = redis.call("xrange", stream, ARGV[5], "+")
  end
end
for _, entry in ipairs(entries) do
  result[#result + 1] = entry[1]
  result[#result + 1] = entry[2][2]  -- the only field, "d"
end
return result
