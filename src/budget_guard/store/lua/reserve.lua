-- reserve.lua: check every budget that applies to a request and reserve its
-- estimated cost on all of them, or on none.
--
-- Why atomic: Redis runs a script to its end before any other command. The script
-- adds the cost to each budget's usage and, if any budget cannot take it, takes
-- every addition back before it ends, so no other client ever sees a partial or
-- an over-limit reservation. The sum of the estimates it lets through therefore
-- never exceeds a limit.
--
-- Numbers are concatenated only through string.format('%d') or as the strings they
-- arrived as: Lua's default number format keeps 14 digits and would corrupt amounts.
--
-- KEYS[1]    reservation record of this request id (string: cost, settled, settled
--            by, plan key, pool choices ("0,2,0": per budget, 0 = its own counter,
--            else the index of the burst pool that took the cost), the plan's user (what
--            its "\26" stands for; see read_plan in _shared), and when this
--            reservation granted leases, what it granted ("g1,g2,...", for
--            forget_grants.lua); joined by "\30")
-- KEYS[2]    pending reservations (sorted set: record key -> settle deadline, ms)
-- KEYS[3]    event stream (threshold crossings, exhaustion, burst pools)
-- KEYS[4]    the marker of this request's lease returns (see return_leases in _shared)
-- KEYS[5]    plan (string, written by this script from ARGV[7]; read by settle.lua):
--            what settling needs of the request's budgets and history, shared by every
--            request with the same budgets, so a reservation record stays small
-- KEYS[6..]  one counter hash per budget (used = spent + reserved + leased, spent, hwm,
--            denied, would_deny, requests, leased), then the hash of every active burst
--            pool (used, spent, requests, activated, exhausted), in record order
--
-- ARGV[1] cost (micro-USD)     ARGV[2] now (unix ms)     ARGV[3] settle deadline (unix ms)
-- ARGV[4] record and plan TTL (ms)  ARGV[5] stream max length  ARGV[6] number of budgets n
-- ARGV[7] the plan's content, or "" when the caller believes it is stored already
-- ARGV[8] "1" to record a request that was already let through (while the ledger was
--         unreachable): every budget counts it as Observe would, none denies; else "0"
-- ARGV[9] lease wanted per budget ("w1,w2,..." micro-USD, "" for none): once the request
--         is reserved, each budget whose counter took it also grants the caller a lease of
--         up to w, so the caller can decide its next requests locally (see
--         store/leases.py), within the cap on all leases (below); a lease below ARGV[10]
--         is not granted
-- ARGV[10] smallest useful lease (micro-USD)
-- ARGV[11] lease room the caller gives back first, per budget ("r1,r2,...", "" for none),
--         once per request id (KEYS[4]), so the request is judged on all that is left
-- ARGV[12] the plan's user ("" when the plan names none): written in the record
-- ARGV[13 .. 12+n] one budget record per budget, the user filled in (see
--         store/plans.py; parse_budget)
--
-- Returns {2} when the request id already has a reservation, {3} when ARGV[7] is ""
--   but the plan is not stored (call again with it); nothing changed in either case
--   (but lease returns, which are applied once whatever follows).
--   Else {1 (reserved) | 0 (denied, nothing reserved), what is assigned to requests
--   on each budget after this decision (used - leased: open leases are not spend),
--   the leases granted ("g1,g2,..."), then one "index:pool:pool-used:crossed:verdict"
--   entry per budget that drew from a pool, crossed a threshold or did not simply fit}
--   verdict: 0 fits, 1 would deny (Observe: reserved anyway), 2 denies.
--
-- A counter's "used" includes the leases granted on it ("leased", not yet assigned to
-- requests): no lease can take what a reservation needs. Thresholds are judged on
-- what is assigned to requests: used - leased. All open leases on a counter together
-- never exceed an eighth of what is not assigned, whoever holds them: so leases
-- cannot starve a shared budget, and a denial leaves at most about one request's
-- cost held in leases elsewhere.

local record, pending, stream, returned, plan = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local cost = tonumber(ARGV[1])
local now, maxlen = ARGV[2], ARGV[5]
local count = tonumber(ARGV[6])
local forced = ARGV[8] == '1'

local budgets = {}
for i = 1, count do
  budgets[i] = parse_budget(ARGV[12 + i])
  budgets[i].crossed, budgets[i].verdict = '', 0
end

if ARGV[11] ~= '' then
  local counters = {}
  for i, budget in ipairs(budgets) do
    counters[i] = budget.key
  end
  return_leases(returned, ARGV[4], counters, split(ARGV[11], ','))
end

local denied = false

-- Draws the cost from the first active pool with room, for a full budget.
local function draw_from_pool(budget)
  for _, pool in ipairs(pools_of(budget)) do
    if pool.cap < 0 or cost <= pool.cap then
      local used = redis.call('HINCRBY', pool.key, 'used', cost)
      if used <= pool.amount then
        pool.used, pool.first = used, used == cost
        budget.pool_target = pool
        return
      end
      redis.call('HINCRBY', pool.key, 'used', -cost)
      if redis.call('HSETNX', pool.key, 'exhausted', now) == 1 then
        redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'kind', 'burst_exhausted',
          'pool', pool.id, 'budget', split(budget.described, '\31')[1], 'used', used - cost,
          'limit', pool.amount, 'at', now)
      end
    end
  end
end

-- Read-only: would some active pool take the cost? (for budgets after a denial)
local function pool_would_take(budget)
  for _, pool in ipairs(pools_of(budget)) do
    local used = tonumber(redis.call('HGET', pool.key, 'used')) or 0
    if (pool.cap < 0 or cost <= pool.cap) and used + cost <= pool.amount then
      return true
    end
  end
  return false
end

for _, budget in ipairs(budgets) do
  if not denied then
    budget.used = redis.call('HINCRBY', budget.key, 'used', cost)
    if budget.used <= budget.limit or not budget.enforces or forced then
      budget.added = true
      if budget.used > budget.limit then
        budget.verdict = 1
      end
    else
      budget.used = redis.call('HINCRBY', budget.key, 'used', -cost)
      if budget.pools_text ~= '' then
        draw_from_pool(budget)
      end
      if not budget.pool_target then
        budget.verdict = 2
        denied = true
      end
    end
  else
    budget.used = tonumber(redis.call('HGET', budget.key, 'used')) or 0
    if budget.enforces and budget.used + cost > budget.limit and not pool_would_take(budget) then
      budget.verdict = 2
    end
  end
end

-- Takes back every addition of this request (a denial, or a taken request id).
local function take_back()
  for _, budget in ipairs(budgets) do
    if budget.added then
      budget.used = redis.call('HINCRBY', budget.key, 'used', -cost)
      budget.added = false
    elseif budget.pool_target then
      redis.call('HINCRBY', budget.pool_target.key, 'used', -cost)
      budget.pool_target = nil
    end
  end
end

if not denied then
  if ARGV[7] ~= '' then
    redis.call('SET', plan, ARGV[7], 'PX', ARGV[4])
  elseif redis.call('PEXPIRE', plan, ARGV[4]) == 0 then
    take_back()
    return {3}
  end
  local choices = {}
  for i, budget in ipairs(budgets) do
    choices[i] = budget.pool_target and budget.pool_target.index or 0
  end
  local value = table.concat({ARGV[1], '', '', plan, table.concat(choices, ','), ARGV[12]},
    '\30')
  if not redis.call('SET', record, value, 'PX', ARGV[4], 'NX') then
    take_back()
    return {2}
  end
  redis.call('ZADD', pending, ARGV[3], record)
else
  take_back()
end

-- What is assigned to requests on a counter: its usage without the unassigned leases.
local function assigned(budget)
  local values = redis.call('HMGET', budget.key, 'hwm', 'leased')
  return tonumber(values[1]) or 0, budget.used - (tonumber(values[2]) or 0)
end

local answer = {denied and 0 or 1}
local details = {}
for i, budget in ipairs(budgets) do
  if denied then
    if budget.verdict == 2 then
      redis.call('HINCRBY', budget.key, 'denied', 1)
      local hwm, usage = assigned(budget)
      if budget.used == 0 then
        redis.call('PEXPIREAT', budget.key, budget.expiry)
      end
      if hwm < 100 then
        budget.crossed = report_crossings(budget.key, hwm, budget.limit, budget.described,
          usage, true, stream, maxlen, now)
      end
    end
  elseif budget.pool_target then
    local pool = budget.pool_target
    if pool.first then
      redis.call('HSET', pool.key, 'activated', now)
      redis.call('PEXPIREAT', pool.key, pool.expiry)
      redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'kind', 'burst_activated',
        'pool', pool.id, 'budget', split(budget.described, '\31')[1], 'used', pool.used,
        'limit', pool.amount, 'at', now)
    end
  else
    if budget.used == cost then  -- a new counter (or one back at zero): bound its life
      redis.call('PEXPIREAT', budget.key, budget.expiry)
    end
    if budget.verdict == 1 then
      redis.call('HINCRBY', budget.key, 'would_deny', 1)
    end
    if budget.users ~= '' then
      redis.call('ZINCRBY', budget.users, cost, split(budget.described, '\31')[3])
      if budget.used == cost then
        redis.call('PEXPIREAT', budget.users, budget.expiry)
      end
    end
    if (budget.first > 0 and budget.used >= budget.first) or budget.used >= budget.limit then
      local hwm, usage = assigned(budget)
      if hwm < 100 then
        budget.crossed = report_crossings(budget.key, hwm, budget.limit, budget.described,
          usage, false, stream, maxlen, now)
      end
    end
  end
  budget.leased = math.max(tonumber(redis.call('HGET', budget.key, 'leased')) or 0, 0)
  answer[#answer + 1] = budget.used - budget.leased
  local pool = budget.pool_target
  if pool or budget.crossed ~= '' or budget.verdict > 0 then
    details[#details + 1] = string.format('%d:%d:%d:%s:%d', i, pool and pool.index or 0,
      pool and pool.used or 0, budget.crossed, budget.verdict)
  end
end
-- Leases, last: they only take what no reservation of this request needs.
local grants = {}
local granted_any = false
local wants = split(ARGV[9], ',')
local smallest = tonumber(ARGV[10]) or 0
for i, budget in ipairs(budgets) do
  local grant = 0
  local want = tonumber(wants[i]) or 0
  if not denied and not budget.pool_target and want > 0 then
    local unassigned = budget.limit - (budget.used - budget.leased)
    grant = math.min(want, math.floor(unassigned / 8) - budget.leased)
    if grant >= smallest and grant > 0 then
      redis.call('HINCRBY', budget.key, 'used', grant)
      redis.call('HINCRBY', budget.key, 'leased', grant)
      granted_any = true
    else
      grant = 0
    end
  end
  grants[i] = string.format('%d', grant)
end
answer[#answer + 1] = table.concat(grants, ',')
if granted_any then  -- with the record, for a caller that never reads this answer
  redis.call('APPEND', record, '\30' .. answer[#answer])
end
for _, detail in ipairs(details) do
  answer[#answer + 1] = detail
end
return answer
