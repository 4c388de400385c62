-- Set this node's subscriber count for a channel and return the cluster totals before and after,
-- in one atomic step, so that exactly one node sees a channel become occupied or vacated.
-- KEYS[1] counts hash (node id -> count).
-- ARGV[1] this node's id, ARGV[2] its new count, ARGV[3] prefix of node liveness keys,
-- ARGV[4] ttl of the hash (s).
-- Nodes without a liveness key (dead) are not counted; this node always is.
local function total()
  local flat = redis.call("hgetall", KEYS[1])
  local sum = 0
  for i = 1, #flat, 2 do
    local node = flat[i]
    if node == ARGV[1] or redis.call("exists", ARGV[3] .. node) == 1 then
      sum = sum + tonumber(flat[i + 1])
    end
  end
  return sum
end

local before = total()
if tonumber(ARGV[2]) > 0 then
  redis.call("hset", KEYS[1], ARGV[1], ARGV[2])
  redis.call("expire", KEYS[1], tonumber(ARGV[4]))
else
  redis.call("hdel", KEYS[1], ARGV[1])
end
return {before, total()}
