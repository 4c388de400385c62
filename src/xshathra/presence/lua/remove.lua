-- Remove one client's presence from a channel.
-- KEYS[1] info hash, KEYS[2] expiry sorted set, KEYS[3] user hash; ARGV[1] client id.
redis.call("hdel", KEYS[1], ARGV[1])
redis.call("zrem", KEYS[2], ARGV[1])
redis.call("hdel", KEYS[3], ARGV[1])
return 1
