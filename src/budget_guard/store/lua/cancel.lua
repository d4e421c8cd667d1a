-- cancel.lua: take back one part of a request that was reserved in one hash tag's slot
-- while another part of it was denied (Redis Cluster; see store/sharded.py), with the
-- leases that part granted.
--
-- Why atomic: the record is deleted in the same script that takes the cost back off
-- the counters, so a cancel retried (or racing a settlement) takes it back once; a part
-- already settled is left alone.
--
-- KEYS[1] the part's reservation record (see reserve.lua)
-- KEYS[2] the pending reservations of its hash tag (sorted set)
-- The plan the record names and the counters, pools and users indexes it names are
-- touched too (same hash tag).
--
-- ARGV[1] the leases the part's reservation granted, per budget of its plan
--         ("g1,g2,...", micro-USD; "" for none): given back too
--
-- Returns 1 when taken back, 0 when there was nothing to take back (no such record, or
-- settled already).

local record, pending = KEYS[1], KEYS[2]
local stored = redis.call('GET', record)
if not stored then
  return 0
end
local fields = split(stored, '\30')
if fields[2] ~= '' then
  return 0
end
local cost = tonumber(fields[1])
local plan = read_plan(fields[4], fields[6])
redis.call('DEL', record)
redis.call('ZREM', pending, record)
if not plan then
  return 1
end
local choices = split(fields[5], ',')
local grants = split(ARGV[1], ',')
for i, line in ipairs(split(plan[1], '\n')) do
  local budget = parse_budget(line)
  local choice = tonumber(choices[i]) or 0
  if choice > 0 then
    redis.call('HINCRBY', pools_of(budget)[choice].key, 'used', -cost)
  else
    redis.call('HINCRBY', budget.key, 'used', -cost)
    if budget.users ~= '' then
      redis.call('ZINCRBY', budget.users, -cost, split(budget.described, '\31')[3])
    end
  end
  give_back_room(budget.key, grants[i])
end
return 1
