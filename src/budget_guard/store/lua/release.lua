-- release.lua: give back the unused part of leases (an idle lease, a period that
-- ended, a new configuration, a process shutting down).
--
-- Why atomic: "used" and "leased" move together, so no reservation ever sees a
-- lease that is half returned.
--
-- KEYS[1 ..]  counters
-- ARGV[i]     the unused amount to give back on KEYS[i] (micro-USD)
--
-- Never gives back more than the counter's open leases: if Redis lost the counter
-- (or restored it) since the lease was granted, what is no longer there stays spent.
--
-- Returns nothing useful (0).

for i, key in ipairs(KEYS) do
  local open_lease = math.max(tonumber(redis.call('HGET', key, 'leased')) or 0, 0)
  local back = math.min(tonumber(ARGV[i]), open_lease)
  if back > 0 then
    redis.call('HINCRBY', key, 'used', -back)
    redis.call('HINCRBY', key, 'leased', -back)
  end
end
return 0
