-- commit.lua: record a batch of requests a process decided locally, from leases it
-- held (see store/leases.py), as reservations like reserve.lua's: each gets its
-- record and a place in the pending index, and its cost moves on each counter
-- from "leased" to assigned.
--
-- Why atomic: the records, the pending index and the counters change together, so
-- a settlement or a status read sees a request either not yet committed (its cost
-- still inside the lease, already counted in "used") or fully committed.
--
-- KEYS[1]  pending reservations (sorted set)       KEYS[2]  event stream
-- KEYS[3]  this batch's marker: a retried batch (its answer lost) is applied once
-- KEYS[4 .. 3+r]        one reservation record per request
-- KEYS[4+r .. 3+r+p]    the plans the requests name
-- KEYS[4+r+p .. ]       the counters whose leases the requests used
--
-- ARGV[1] now (unix ms)   ARGV[2] settle deadline (unix ms)   ARGV[3] record and plan TTL (ms)
-- ARGV[4] stream max length   ARGV[5] requests r   ARGV[6] plans p   ARGV[7] counters c
-- ARGV[8 .. 7+r]        per request "cost,plan index (1-based),budgets in its plan,user"
--                       (the user its plan's "\26" stands for; see reserve.lua's record)
-- ARGV[8+r .. 7+r+p]    per plan its content (see settle.lua)
-- ARGV[8+r+p .. ]       per counter "amount to assign\t" and its budget record (see
--                       store/plans.py; parse_budget)
--
-- If Redis lost a counter (or part of its lease) since the lease was granted, what the
-- lease no longer covers is added to the counter's usage: spend is never lost.
--
-- Returns the 1-based indexes of requests whose id was taken (recorded under a fresh
-- key instead: counted, and kept at their estimate by the sweeper), as one string
-- "i,j" ("" when none); "applied" when the batch was committed before.

local pending, stream, marker = KEYS[1], KEYS[2], KEYS[3]
local now, deadline, ttl, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local requests, plans, counters = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])

if not redis.call('SET', marker, '1', 'PX', ttl, 'NX') then
  return 'applied'
end

for p = 1, plans do
  redis.call('SET', KEYS[3 + requests + p], ARGV[7 + requests + p], 'PX', ttl)
end

local taken = {}
local indexed = {}  -- the pending index's score and member pairs, added in one ZADD
for r = 1, requests do
  local cost, plan_index, budgets, user = string.match(ARGV[7 + r],
    '^(%d+),(%d+),(%d+),(.*)$')
  local choices = {}
  for b = 1, tonumber(budgets) do
    choices[b] = '0'
  end
  local plan = KEYS[3 + requests + tonumber(plan_index)]
  local value = table.concat({cost, '', '', plan, table.concat(choices, ','), user}, '\30')
  local record = KEYS[3 + r]
  if not redis.call('SET', record, value, 'PX', ttl, 'NX') then
    taken[#taken + 1] = string.format('%d', r)
    record = record .. ':dup:' .. now .. ':' .. r
    redis.call('SET', record, value, 'PX', ttl)
  end
  indexed[#indexed + 1] = deadline
  indexed[#indexed + 1] = record
end
if requests > 0 then
  redis.call('ZADD', pending, unpack(indexed))
end

for c = 1, counters do
  local key = KEYS[3 + requests + plans + c]
  local amount, record = string.match(ARGV[7 + requests + plans + c], '^(%d+)\t(.*)$')
  local budget = parse_budget(record)
  local limit, first, expiry, users, described = budget.limit, budget.first, budget.expiry,
    budget.users, budget.described
  amount = tonumber(amount)
  local open_lease = math.max(tonumber(redis.call('HGET', key, 'leased')) or 0, 0)
  local from_lease = math.min(amount, open_lease)
  local leased = open_lease
  if from_lease > 0 then
    leased = redis.call('HINCRBY', key, 'leased', -from_lease)
  end
  if amount > from_lease then
    if redis.call('HINCRBY', key, 'used', amount - from_lease) == amount - from_lease then
      redis.call('PEXPIREAT', key, expiry)
    end
  end
  if users ~= '' then
    redis.call('ZINCRBY', users, amount, split(described, '\31')[3])
  end
  local values = redis.call('HMGET', key, 'used', 'hwm')
  local usage = (tonumber(values[1]) or 0) - leased
  local hwm = tonumber(values[2]) or 0
  if hwm < 100 and ((first > 0 and usage >= first) or usage >= limit) then
    report_crossings(key, hwm, limit, described, usage, false, stream, maxlen, now)
  end
end

return table.concat(taken, ',')
