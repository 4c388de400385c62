-- Add or refresh one client's presence in a channel; it expires `ttl` ms from now unless
-- refreshed. Time is Redis's own clock, so nodes with skewed clocks agree on expiry.
--
-- KEYS[1] hash client -> encoded info, KEYS[2] sorted set client -> expiry (unix ms),
-- KEYS[3] hash client -> user (lets stats count users without decoding infos).
-- ARGV[1] client id, ARGV[2] encoded info, ARGV[3] user id, ARGV[4] ttl in ms.
local now = redis.call("time")
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ttl = tonumber(ARGV[4])

redis.call("hset", KEYS[1], ARGV[1], ARGV[2])
redis.call("hset", KEYS[3], ARGV[1], ARGV[3])
redis.call("zadd", KEYS[2], string.format("%.0f", now_ms + ttl), ARGV[1])
-- Whole keys go once nobody refreshes anything in the channel.
for i = 1, 3 do
  redis.call("pexpire", KEYS[i], ttl)
end
return 1
