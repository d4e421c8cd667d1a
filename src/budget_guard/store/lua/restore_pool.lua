-- restore_pool.lua: put back what a burst pool gave out, when Redis lost it, from what
-- the BurstBudget's status last recorded. Never lowers anything.
--
-- KEYS[1] the pool (hash: used, spent, requests, activated, exhausted)
-- ARGV[1] recorded usage (micro-USD; status.spent)
-- ARGV[2] recorded requests
-- ARGV[3] when it was activated (unix ms; 0: not activated)
-- ARGV[4] when it was exhausted (unix ms; 0: not exhausted)
-- ARGV[5] the pool's expiry (unix ms), if it has to be created
--
-- Returns what was added to its usage (0 when nothing was missing).

local key = KEYS[1]
local recorded = tonumber(ARGV[1])
local existed = redis.call('EXISTS', key) == 1
local used = tonumber(redis.call('HGET', key, 'used')) or 0
local missing = 0
if used < recorded then
  missing = recorded - used
  redis.call('HINCRBY', key, 'used', missing)
  redis.call('HINCRBY', key, 'spent', missing)
end
if (tonumber(redis.call('HGET', key, 'requests')) or 0) < tonumber(ARGV[2]) then
  redis.call('HSET', key, 'requests', ARGV[2])
end
if ARGV[3] ~= '0' then
  redis.call('HSETNX', key, 'activated', ARGV[3])
end
if ARGV[4] ~= '0' then
  redis.call('HSETNX', key, 'exhausted', ARGV[4])
end
if not existed and redis.call('EXISTS', key) == 1 then
  redis.call('PEXPIREAT', key, ARGV[5])
end
return missing
