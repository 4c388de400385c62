-- Add or refresh one client's presence in a channel.
-- KEYS[1] hash client -> info, KEYS[2] sorted set client -> expiry (unix s).
-- ARGV[1] client id, ARGV[2] encoded info, ARGV[3] expiry (unix s), ARGV[4] key ttl (s).
redis.call("hset", KEYS[1], ARGV[1], ARGV[2])
redis.call("zadd", KEYS[2], ARGV[3], ARGV[1])
redis.call("expire", KEYS[1], ARGV[4])
redis.call("expire", KEYS[2], ARGV[4])
return 1
