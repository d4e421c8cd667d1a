-- restore_users.lua: put back the spend of a per-user template's users that Redis lost
-- (a flush, a failover without persistence), from the operator's checkpoint. Each
-- user's counter is raised to the spend the checkpoint recorded, never lowered; the
-- users index rises with it, so status and reports see them again.
--
-- KEYS[1] the users index (sorted set: user -> usage)
-- ARGV[1] the users' counter key without the user ("...:u:")
-- ARGV[2] the counters' expiry (unix ms), if they have to be created
-- ARGV[3..] triples: user, recorded spend (micro-USD), highest threshold announced
--
-- Returns {users raised, micro-USD added}.

local users, prefix, expiry = KEYS[1], ARGV[1], ARGV[2]
local raised, added = 0, 0
for i = 3, #ARGV, 3 do
  local user, recorded, reached = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local key = prefix .. user
  local spent = tonumber(redis.call('HGET', key, 'spent')) or 0
  if spent < recorded then
    local missing = recorded - spent
    local existed = redis.call('EXISTS', key) == 1
    redis.call('HINCRBY', key, 'spent', missing)
    redis.call('HINCRBY', key, 'used', missing)
    redis.call('ZINCRBY', users, missing, user)
    if not existed then
      redis.call('PEXPIREAT', key, expiry)
    end
    raised, added = raised + 1, added + missing
  end
  if (tonumber(redis.call('HGET', key, 'hwm')) or 0) < reached then
    redis.call('HSET', key, 'hwm', reached)
  end
end
if raised > 0 and redis.call('PTTL', users) == -1 then
  redis.call('PEXPIREAT', users, expiry)
end
return {raised, added}
