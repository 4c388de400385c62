-- Drop the entries nobody refreshed in time (their node died), then read what is left.
--
-- KEYS[1] info hash, KEYS[2] expiry sorted set (unix ms), KEYS[3] user hash.
-- ARGV[1] "stats" for {clients, distinct users}; anything else for HGETALL of the info hash.
local now = redis.call("time")
local now_ms = string.format("%.0f", tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))

local expired = redis.call("zrangebyscore", KEYS[2], "-inf", now_ms)
if #expired > 0 then
  for _, client in ipairs(expired) do
    redis.call("hdel", KEYS[1], client)
    redis.call("hdel", KEYS[3], client)
  end
  redis.call("zremrangebyscore", KEYS[2], "-inf", now_ms)
end

if ARGV[1] == "stats" then
  local seen, users = {}, 0
  for _, user in ipairs(redis.call("hvals", KEYS[3])) do
    if not seen[user] then
      seen[user] = true
      users = users + 1
    end
  end
  return {redis.call("hlen", KEYS[1]), users}
end
return redis.call("hgetall", KEYS[1])
