-- restore.lua: put back spend Redis lost (a flush, a failover without persistence):
-- a counter's settled spend is raised to what the budget's status last recorded.
-- Recorded spend never goes down.
--
-- Why atomic: the counter's spend and usage rise together, and a counter that is
-- already at or above the record is left alone, whoever ran first.
--
-- KEYS[1] the counter (hash: used, spent, ...)
-- ARGV[1] spend recorded in the budget's status (micro-USD)
-- ARGV[2] the counter's expiry (unix ms), if it has to be created
-- ARGV[3] the highest threshold percent the status shows as reached (0: none): the
--         counter's "hwm", so crossings already announced are not announced again
--
-- Returns what was added (0 when nothing was missing).

local key = KEYS[1]
local recorded = tonumber(ARGV[1])
local spent = tonumber(redis.call('HGET', key, 'spent')) or 0
if spent >= recorded then
  return 0
end
local missing = recorded - spent
local existed = redis.call('EXISTS', key) == 1
redis.call('HINCRBY', key, 'spent', missing)
redis.call('HINCRBY', key, 'used', missing)
if not existed then
  redis.call('PEXPIREAT', key, ARGV[2])
end
if (tonumber(redis.call('HGET', key, 'hwm')) or 0) < tonumber(ARGV[3]) then
  redis.call('HSET', key, 'hwm', ARGV[3])
end
return missing
