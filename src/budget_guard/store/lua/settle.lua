-- settle.lua: apply a request's actual cost to every counter its reservation
-- touched, exactly once; or, for an overdue reservation, keep or release its estimate.
--
-- Why atomic: the record's "settled" field is read and written in the same script
-- as the counters, so concurrent or repeated settlements of one request id charge
-- it once. A reservation settled by expiry can still be settled by its real usage
-- later: only the difference is applied, and only once.
--
-- KEYS[1] reservation record (string written by reserve.lua; see its header)
-- KEYS[2] pending reservations (sorted set)
-- KEYS[3] event stream
-- KEYS[4] settled requests (stream; optional): one entry per settlement, for audits
-- The plan the record names (see reserve.lua), and the counters, pools, users
-- indexes and history hashes the plan names, are touched too (same hash tags as
-- when they were reserved).
--
-- plan: read with read_plan (the record's user filled in; see _shared.lua).
-- Budget records (see store/plans.py; parse_budget), "\30", history lines, "\30",
--   hourly lines. A history line is "key\tspent-field\tcount-field", and "\tseconds" when
--   the hash has a retention of its own (per-user detail; else ARGV[4]). An hourly line
--   is "key-prefix\tseconds": the hash is the prefix and ARGV[11], fields "s:"/"n:" and
--   ARGV[12].
--
-- ARGV[1] mode: "usage" | "expire-keep" | "expire-release"
-- ARGV[2] actual cost, micro-USD (mode "usage")     ARGV[3] now (unix ms)
-- ARGV[4] history retention (s)                      ARGV[5] stream max length
-- With KEYS[4]: ARGV[6] request id, ARGV[7] input tokens and ARGV[8] output tokens ("":
--   not reported), ARGV[9] its max length, ARGV[10] its max age (ms, by Redis's clock).
-- ARGV[11] the settlement's UTC day (YYYY-MM-DD)     ARGV[12] its UTC hour (HH)
-- ARGV[13] who reported the usage, for the stream (api, ext_proc, client, journal); expiry
--   settlements are the sweeper's
-- ARGV[14] "1": also answer the other parts of this request (Redis Cluster, where a request
--   has a record per hash tag; see store/sharded.py): the plan's fourth section, the
--   other parts' hash tags, comma-joined ("" or absent: not asked). The plan's fifth
--   section, when there is one, names the other parts' budgets for the settled stream,
--   and its sixth the request's attribution label (its history lines are elsewhere).
--
-- Returns {status, reserved cost, charged cost, charged before (-1: never), attribution
--   ("tenant\31feature\31model\31user" from the plan's attribution line, or "")}; status is one of
--   "settled", "already" (charged before: nothing changed), "unknown" (no such
--   reservation, or its record expired), "not-due" (expiry mode, deadline not reached),
--   "lost" (the record's plan is gone: Redis lost data; nothing changed). Asked with
--   ARGV[14], "settled" and "already" answers carry a sixth element: the other parts'
--   tags (and "already" pads the fourth and fifth with -1 and "").

local record, pending, stream = KEYS[1], KEYS[2], KEYS[3]
local mode, now, retention, maxlen = ARGV[1], ARGV[3], ARGV[4], ARGV[5]

local stored = redis.call('GET', record)
if not stored then
  return {'unknown', 0, 0}
end
local fields = split(stored, '\30')
local cost = tonumber(fields[1])
local prior = tonumber(fields[2])
local asks_parts = ARGV[14] == '1'

-- The other parts' tags (plan section 4), when asked.
local function parts_of(plan_text)
  if not asks_parts or not plan_text then
    return ''
  end
  return split(plan_text, '\30')[4] or ''
end

local actual
if mode == 'usage' then
  if prior and fields[3] == 'usage' then
    if asks_parts then
      return {'already', cost, prior, -1, '', parts_of(redis.call('GET', fields[4]))}
    end
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

local plan = read_plan(fields[4], fields[6])
if not plan then
  return {'lost', cost, 0}
end
local choices = split(fields[5], ',')

local delta = actual - (prior or 0)
-- what spent + reserved changes by: the reservation turns into the actual cost
local used_change = prior and delta or actual - cost
local charged = {}  -- the budgets (or burst pools) charged, for the settled stream
for i, line in ipairs(split(plan[1], '\n')) do
  local budget = parse_budget(line)
  local key, limit, expiry = budget.key, budget.limit, budget.expiry
  local users, described = budget.users, budget.described
  local choice = tonumber(choices[i]) or 0
  local charged_id = string.match(described, '^[^\31]*')
  if choice > 0 then  -- the burst pool that took this budget's share
    local pool = pools_of(budget)[choice]
    key, expiry = pool.key, pool.expiry
    users, described = '', ''
    charged_id = pool.id
  end
  charged[#charged + 1] = charged_id
  local used = redis.call('HINCRBY', key, 'used', used_change)
  redis.call('HINCRBY', key, 'spent', delta)
  if not prior then
    redis.call('HINCRBY', key, 'requests', 1)
  end
  if redis.call('PTTL', key) == -1 then
    redis.call('PEXPIREAT', key, expiry)  -- the key was lost and re-created: bound it again
  end
  if users ~= '' and used_change ~= 0 then
    redis.call('ZINCRBY', users, used_change, split(described, '\31')[3])
  end
  if described ~= '' and used_change > 0 then
    local values = redis.call('HMGET', key, 'hwm', 'leased')
    local hwm = tonumber(values[1]) or 0
    if hwm < 100 then  -- judged on what is assigned to requests, without open leases
      report_crossings(key, hwm, limit, described, used - (tonumber(values[2]) or 0),
        false, stream, maxlen, now)
    end
  end
end

local attribution = ''
for _, line in ipairs(split(plan[2], '\n')) do
  local key, spent_field, count_field, kept = string.match(line,
    '^([^\t]*)\t([^\t]*)\t([^\t]*)\t?(%d*)$')
  if string.sub(spent_field, 1, 2) == 's\31' then
    attribution = string.sub(spent_field, 3)
  end
  redis.call('HINCRBY', key, spent_field, delta)
  if not prior then
    redis.call('HINCRBY', key, count_field, 1)
  end
  redis.call('EXPIRE', key, kept ~= '' and kept or retention)
end
if attribution == '' and plan[6] then
  attribution = plan[6]
end
for _, line in ipairs(split(plan[3], '\n')) do
  local prefix, kept = string.match(line, '^([^\t]*)\t(%d+)$')
  local key = prefix .. ARGV[11]
  redis.call('HINCRBY', key, 's:' .. ARGV[12], delta)
  if not prior then
    redis.call('HINCRBY', key, 'n:' .. ARGV[12], 1)
  end
  redis.call('EXPIRE', key, kept)
end

local settled_by = mode == 'usage' and 'usage' or 'expiry'
local value = table.concat({fields[1], string.format('%d', actual), settled_by, fields[4],
  fields[5], fields[6] or '', fields[7]}, '\30')  -- the grants stay (forget_grants.lua)
redis.call('SET', record, value, 'KEEPTTL')
redis.call('ZREM', pending, record)
if KEYS[4] then
  if plan[5] and plan[5] ~= '' then
    charged[#charged + 1] = plan[5]
  end
  local entry = {'at', now, 'request', ARGV[6], 'cost', string.format('%d', actual),
    'source', mode == 'usage' and ARGV[13] or 'sweeper', 'budgets', table.concat(charged, ',')}
  local who = split(attribution, '\31')
  for i, name in ipairs({'tenant', 'feature', 'model', 'user'}) do
    if who[i] and who[i] ~= '' then
      entry[#entry + 1], entry[#entry + 2] = name, who[i]
    end
  end
  if prior then
    entry[#entry + 1], entry[#entry + 2] = 'replaces', string.format('%d', prior)
  end
  if ARGV[7] ~= '' then
    entry[#entry + 1], entry[#entry + 2] = 'input_tokens', ARGV[7]
    entry[#entry + 1], entry[#entry + 2] = 'output_tokens', ARGV[8]
  end
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '*', unpack(entry))
  local clock = redis.call('TIME')
  local oldest = tonumber(clock[1]) * 1000 - tonumber(ARGV[10])
  redis.call('XTRIM', KEYS[4], 'MINID', '~', string.format('%d', oldest))
end
if asks_parts then
  return {'settled', cost, actual, prior or -1, attribution, plan[4] or ''}
end
return {'settled', cost, actual, prior or -1, attribution}
