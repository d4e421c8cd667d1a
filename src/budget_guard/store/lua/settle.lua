-- settle.lua: apply a request's actual cost to every counter its reservation
-- touched, exactly once; or, for an overdue reservation, keep or release its estimate.
--
-- Why atomic: the record's "settled" field is read and written in the same script
-- as the counters, so concurrent or repeated settlements of one request id charge
-- it once. A reservation settled by expiry can still be settled by its real usage
-- later: only the difference is applied, and only once.
--
-- KEYS[1] reservation record (hash: cost, targets, history, settled, by)
-- KEYS[2] pending reservations (sorted set)
-- KEYS[3] event stream
--
-- ARGV[1] mode: "usage" | "expire-keep" | "expire-release"
-- ARGV[2] actual cost, micro-USD (mode "usage")     ARGV[3] now (unix ms)
-- ARGV[4] history retention (s)                      ARGV[5] stream max length
--
-- Returns {status, reserved cost, charged cost}; status is one of
--   "settled", "already" (charged before: nothing changed), "unknown" (no such
--   reservation, or its record expired), "not-due" (expiry mode, deadline not reached).

local record, pending, stream = KEYS[1], KEYS[2], KEYS[3]
local mode, now, retention, maxlen = ARGV[1], ARGV[3], ARGV[4], ARGV[5]

local fields = redis.call('HMGET', record, 'cost', 'targets', 'history', 'settled', 'by')
if not fields[1] then
  return {'unknown', 0, 0}
end
local cost = tonumber(fields[1])
local prior = tonumber(fields[4])
local actual
if mode == 'usage' then
  if prior and fields[5] == 'usage' then
    return {'already', cost, prior}
  end
  actual = tonumber(ARGV[2])
else
  if prior then
    return {'already', cost, prior}
  end
  local due = redis.call('ZSCORE', pending, record)
  if due and tonumber(due) > tonumber(now) then
    return {'not-due', cost, 0}
  end
  actual = mode == 'expire-keep' and cost or 0
end

local delta = actual - (prior or 0)
-- what spent + reserved changes by: the reservation turns into the actual cost
local used_change = prior and delta or actual - cost
for _, line in ipairs(split(fields[2], '\n')) do
  -- key, limit, thresholds, budget, period, subject, users index (see reserve.lua)
  local target = split(line, '\t')
  local key = target[1]
  if not prior then
    redis.call('HINCRBY', key, 'reserved', -cost)
  end
  redis.call('HINCRBY', key, 'spent', delta)
  if target[7] ~= '' and used_change ~= 0 then
    redis.call('ZINCRBY', target[7], used_change, target[6])
  end
  if target[4] ~= '' and used_change > 0 then
    report_crossings(key, tonumber(target[2]), target[3], used_of(key), false,
      {target[4], target[5], target[6]}, stream, maxlen, now)
  end
end

for _, line in ipairs(split(fields[3], '\n')) do
  local history = split(line, '\t')
  redis.call('HINCRBY', history[1], history[2], delta)
  if not prior then
    redis.call('HINCRBY', history[1], history[3], 1)
  end
  redis.call('EXPIRE', history[1], retention)
end

redis.call('HSET', record, 'settled', actual, 'by', mode == 'usage' and 'usage' or 'expiry')
redis.call('ZREM', pending, record)
if mode == 'usage' then
  redis.call('HDEL', record, 'targets', 'history')
end
return {'settled', cost, actual}
