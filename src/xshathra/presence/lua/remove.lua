-- Remove one client's presence. KEYS[1] hash, KEYS[2] sorted set; ARGV[1] client id.
redis.call("hdel", KEYS[1], ARGV[1])
redis.call("zrem", KEYS[2], ARGV[1])
return 1
