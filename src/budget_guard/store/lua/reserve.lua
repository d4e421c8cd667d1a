-- reserve.lua: check every budget that applies to a request and reserve its
-- estimated cost on all of them, or on none.
--
-- Why atomic: Redis runs a script to its end before any other command, so no
-- other request can reserve between this script's reads and its writes. The sum
-- of the estimates it lets through therefore never exceeds a limit.
--
-- KEYS[1]    reservation record (hash) of this request id
-- KEYS[2]    pending reservations (sorted set: record key -> settle deadline, ms)
-- KEYS[3]    event stream (threshold crossings, exhaustion, burst pools)
-- KEYS[4..]  one counter hash per budget (spent, reserved, requests, denied,
--            would_deny, hwm), then every burst pool hash, in ARGV order
--
-- ARGV[1] cost (micro-USD)     ARGV[2] now (unix ms)     ARGV[3] settle deadline (unix ms)
-- ARGV[4] record TTL (ms)      ARGV[5] stream max length  ARGV[6] number of budgets
-- ARGV[7] history lines for the record ("key\tspent-field\tcount-field", one per line;
--         opaque here, applied by settle.lua)
-- then per budget, 9 values: effective limit, enforce (1|0), counter expiry (unix ms),
--   thresholds ("70:7000000,..."), budget id, period key, subject ("" if none),
--   users index key of a per-user template ("" if none: a sorted set of each user's
--   usage, same hash tag as the counter), number of active pools m;
--   then per pool, 4 values: amount, max request cost (-1 = no cap), pool expiry
--   (unix ms), pool id.
--
-- Returns {2} when the request id already has a reservation (nothing changed), else
--   {1 (reserved) | 0 (denied, nothing reserved), then per budget 5 values:
--    used after, pool index (0 = none), pool used after, crossed ("70,80"), verdict}
--   verdict: 0 fits, 1 would deny (Observe: reserved anyway), 2 denies.

local record, pending, stream = KEYS[1], KEYS[2], KEYS[3]
local cost = tonumber(ARGV[1])
local now, deadline, record_ttl, maxlen = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local count = tonumber(ARGV[6])

if redis.call('EXISTS', record) == 1 then
  return {2}
end

local budgets = {}
local arg, counter_key, pool_key = 8, 4, 4 + count
local denied = false
for i = 1, count do
  local budget = {
    key = KEYS[counter_key], limit = tonumber(ARGV[arg]), enforce = ARGV[arg + 1] == '1',
    expiry = ARGV[arg + 2], thresholds = ARGV[arg + 3],
    labels = {ARGV[arg + 4], ARGV[arg + 5], ARGV[arg + 6]}, users = ARGV[arg + 7],
    pools = {}, pool = 0, pool_used = 0, crossed = '', verdict = 0,
  }
  local pool_count = tonumber(ARGV[arg + 8])
  arg, counter_key = arg + 9, counter_key + 1
  for j = 1, pool_count do
    budget.pools[j] = {
      key = KEYS[pool_key], amount = tonumber(ARGV[arg]), cap = tonumber(ARGV[arg + 1]),
      expiry = ARGV[arg + 2], id = ARGV[arg + 3],
    }
    arg, pool_key = arg + 4, pool_key + 1
  end
  budget.used = used_of(budget.key)
  if budget.used + cost > budget.limit then
    if not budget.enforce then
      budget.verdict = 1
    else
      for j, pool in ipairs(budget.pools) do
        pool.used = used_of(pool.key)
        local within_cap = pool.cap < 0 or cost <= pool.cap
        if within_cap and pool.used + cost <= pool.amount then
          budget.pool = j
          break
        end
        if within_cap and redis.call('HSETNX', pool.key, 'exhausted', now) == 1 then
          redis.call('PEXPIREAT', pool.key, pool.expiry)
          redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'kind', 'burst_exhausted',
            'pool', pool.id, 'budget', budget.labels[1], 'used', pool.used,
            'limit', pool.amount, 'at', now)
        end
      end
      if budget.pool == 0 then
        budget.verdict = 2
        denied = true
      end
    end
  end
  budgets[i] = budget
end

local answer = {denied and 0 or 1}
local targets = {}
for _, budget in ipairs(budgets) do
  if denied then
    if budget.verdict == 2 then
      redis.call('HINCRBY', budget.key, 'denied', 1)
      redis.call('PEXPIREAT', budget.key, budget.expiry)
      budget.crossed = report_crossings(budget.key, budget.limit, budget.thresholds,
        budget.used, true, budget.labels, stream, maxlen, now)
    end
  elseif budget.pool > 0 then
    local pool = budget.pools[budget.pool]
    redis.call('HINCRBY', pool.key, 'reserved', cost)
    redis.call('HINCRBY', pool.key, 'requests', 1)
    redis.call('PEXPIREAT', pool.key, pool.expiry)
    if redis.call('HSETNX', pool.key, 'activated', now) == 1 then
      redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'kind', 'burst_activated',
        'pool', pool.id, 'budget', budget.labels[1], 'used', pool.used + cost,
        'limit', pool.amount, 'at', now)
    end
    budget.pool_used = pool.used + cost
    targets[#targets + 1] = table.concat({pool.key, pool.amount, '', '', '', '', ''}, '\t')
  else
    redis.call('HINCRBY', budget.key, 'reserved', cost)
    redis.call('HINCRBY', budget.key, 'requests', 1)
    if budget.verdict == 1 then
      redis.call('HINCRBY', budget.key, 'would_deny', 1)
    end
    redis.call('PEXPIREAT', budget.key, budget.expiry)
    if budget.users ~= '' then
      redis.call('ZINCRBY', budget.users, cost, budget.labels[3])
      redis.call('PEXPIREAT', budget.users, budget.expiry)
    end
    budget.used = budget.used + cost
    budget.crossed = report_crossings(budget.key, budget.limit, budget.thresholds, budget.used,
      false, budget.labels, stream, maxlen, now)
    targets[#targets + 1] = table.concat({budget.key, budget.limit, budget.thresholds,
      budget.labels[1], budget.labels[2], budget.labels[3], budget.users}, '\t')
  end
  answer[#answer + 1] = budget.used
  answer[#answer + 1] = budget.pool
  answer[#answer + 1] = budget.pool_used
  answer[#answer + 1] = budget.crossed
  answer[#answer + 1] = budget.verdict
end

if not denied then
  redis.call('HSET', record, 'cost', cost, 'targets', table.concat(targets, '\n'),
    'history', ARGV[7], 'created', now)
  redis.call('PEXPIRE', record, record_ttl)
  redis.call('ZADD', pending, deadline, record)
end
return answer
