-- _shared.lua: helpers prepended to every script (see store/scripts.py).
-- It declares no KEYS or ARGV of its own; each helper says which keys it touches.

-- Splits on a one-character separator, keeping empty fields.
local function split(text, separator)
  local parts = {}
  if text == nil or text == '' then
    return parts
  end
  local start = 1
  while true do
    local found = string.find(text, separator, start, true)
    if not found then
      parts[#parts + 1] = string.sub(text, start)
      return parts
    end
    parts[#parts + 1] = string.sub(text, start, found - 1)
    start = found + 1
  end
end

-- The budget record: the one format every script reads about a budget (written by
-- store/plans.py, where its field table is). Fields joined by "\t":
--   counter, limit, enforce (1|0), expiry (unix ms), first soft threshold amount,
--   users index ("" unless a per-user template), description, pools.
-- Returns a table; numbers are numbers, keys and texts stay strings, and the pools stay
-- unparsed until pools_of() is called (they matter only once a budget is full).
local function parse_budget(record)
  local counter, limit, enforce, expiry, first, users, described, pools = string.match(record,
    '^([^\t]*)\t(%d+)\t([01])\t(%d+)\t(%d+)\t([^\t]*)\t([^\t]*)\t(.*)$')
  return {key = counter, limit = tonumber(limit), enforces = enforce == '1', expiry = expiry,
    first = tonumber(first), users = users, described = described, pools_text = pools}
end

-- A stored plan (see store/plans.py), split in its sections, with the user its
-- reservation record names (the record's sixth field) filled in for "\26": a plan is
-- shared by every user of the same budgets. Returns nil when the plan is gone.
local function read_plan(key, user)
  local text = redis.call('GET', key)
  if not text then
    return nil
  end
  if user and user ~= '' then
    text = string.gsub(text, '\26', function() return user end)
  end
  return split(text, '\30')
end

-- A record's burst pools: {key, amount, cap (-1: none), expiry, id, index} each, in order.
local function pools_of(budget)
  local pools = {}
  for entry in string.gmatch(budget.pools_text, '[^\29]+') do
    local key, amount, cap, expiry, id = string.match(entry,
      '^([^\28]*)\28(%d+)\28(-?%d+)\28(%d+)\28(.*)$')
    pools[#pools + 1] = {key = key, amount = tonumber(amount), cap = tonumber(cap),
      expiry = expiry, id = id, index = #pools + 1}
  end
  return pools
end

-- Takes lease room off a counter: never more than its open leases (a counter Redis
-- lost or restored keeps what is no longer there counted as spent).
--   counter: counter hash (fields written: used, leased)     room: micro-USD, or nil
local function give_back_room(counter, room)
  room = tonumber(room) or 0
  if room > 0 then
    room = math.min(room, math.max(tonumber(redis.call('HGET', counter, 'leased')) or 0, 0))
  end
  if room > 0 then
    redis.call('HINCRBY', counter, 'used', -room)
    redis.call('HINCRBY', counter, 'leased', -room)
  end
end

-- Gives back lease room once per marker: a return retried after its answer was lost
-- finds the marker and changes nothing.
--   marker:  the marker key (string, set for ttl ms)     counters, rooms: parallel lists
-- Returns false when the marker was there already (nothing changed), else true.
local function return_leases(marker, ttl, counters, rooms)
  if not redis.call('SET', marker, '1', 'PX', ttl, 'NX') then
    return false
  end
  for i, counter in ipairs(counters) do
    give_back_room(counter, rooms[i])
  end
  return true
end

-- Reports, once per counter, each soft threshold that usage has reached, and
-- exhaustion (100: usage at the limit, or a request denied), not reported before.
-- The counter's "hwm" field holds the highest percent reported, so concurrent
-- requests and repeated settlements report each crossing exactly once per
-- counter (a counter is one budget period, or one user's share of it).
--   counter:   counter hash (field written: hwm)
--   hwm:       its current hwm (0 when unset), read by the caller
--   described: "budget\31period\31subject\31thresholds", thresholds being
--              "70:7000000,80:8000000" (percent:amount in micro-USD)
--   exhausted: true when a request was just denied by this counter
-- Appends an event per crossing to the stream; returns the crossed percents,
-- comma-joined ("" when none).
local function report_crossings(counter, hwm, limit, described, used, exhausted, stream,
                                maxlen, now)
  local labels = split(described, '\31')
  local crossed = {}
  for percent, amount in string.gmatch(labels[4] or '', '(%d+):(%d+)') do
    percent = tonumber(percent)
    if percent > hwm and used >= tonumber(amount) then
      crossed[#crossed + 1] = percent
    end
  end
  if hwm < 100 and (exhausted or used >= limit) then
    crossed[#crossed + 1] = 100
  end
  if #crossed == 0 then
    return ''
  end
  redis.call('HSET', counter, 'hwm', crossed[#crossed])
  for _, percent in ipairs(crossed) do
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
      'kind', percent == 100 and 'exhausted' or 'soft_limit',
      'budget', labels[1], 'period', labels[2], 'subject', labels[3],
      'threshold', percent, 'used', used, 'limit', limit, 'at', now)
  end
  return table.concat(crossed, ',')
end
