-- Drop entries whose node stopped refreshing them, then return what is left.
-- KEYS[1] hash, KEYS[2] sorted set; ARGV[1] now (unix s). Returns HGETALL's flat list.
local expired = redis.call("zrangebyscore", KEYS[2], "-inf", ARGV[1])
for _, client in ipairs(expired) do
  redis.call("hdel", KEYS[1], client)
  redis.call("zrem", KEYS[2], client)
end
return redis.call("hgetall", KEYS[1])
