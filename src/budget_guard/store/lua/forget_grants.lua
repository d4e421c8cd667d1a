-- forget_grants.lua: give back the leases a reservation granted when the process that
-- asked for them never read the answer (it gave up on the reply, or lost the
-- connection): no process holds that room, so without this it would stay counted
-- as used until the period ends.
--
-- Why atomic: the grants are read from the reservation's record and cleared there in
-- the same script that takes them off the counters, so a retry (or a second caller)
-- gives them back once. Only the grants: the request's own cost stays reserved, for
-- its settlement (or the sweeper) to settle.
--
-- KEYS[1] the reservation record (see reserve.lua: its seventh field holds the leases
--         it granted, "g1,g2,..." per budget of its plan, when it granted any)
-- The plan the record names and the counters it names are touched too (same hash tag).
--
-- Returns 1 when leases were given back, 0 when the record holds none (none granted,
-- or given back before), -1 when there is no such record (the reservation never ran,
-- was taken back, or expired).

local record = KEYS[1]
local stored = redis.call('GET', record)
if not stored then
  return -1
end
local fields = split(stored, '\30')
local grants = split(fields[7] or '', ',')
if #grants == 0 then
  return 0
end
redis.call('SET', record, table.concat(fields, '\30', 1, 6), 'KEEPTTL')
local plan = read_plan(fields[4], fields[6])
if not plan then  -- its budgets are unknown: the counters expire with their period
  return 0
end
for i, line in ipairs(split(plan[1], '\n')) do
  give_back_room(parse_budget(line).key, grants[i])
end
return 1
