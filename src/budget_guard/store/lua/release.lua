-- release.lua: give back the unused part of leases (an idle lease, a period that
-- ended, a new configuration, a process shutting down), exactly once.
--
-- Why atomic: "used" and "leased" move together, so no reservation ever sees a
-- lease that is half returned; and the marker is set in the same script, so a
-- release retried after its answer was lost (or after a reservation that carried the
-- same returns may have run) changes nothing the second time.
--
-- KEYS[1]     the marker of this return (see return_leases in _shared.lua)
-- KEYS[2 ..]  counters
-- ARGV[1]     the marker's lifetime (ms)
-- ARGV[1+i]   the unused amount to give back on KEYS[1+i] (micro-USD)
--
-- Never gives back more than the counter's open leases: if Redis lost the counter
-- (or restored it) since the lease was granted, what is no longer there stays spent.
--
-- Returns 1 when applied, 0 when the marker was there (applied before).

local counters, rooms = {}, {}
for i = 2, #KEYS do
  counters[#counters + 1] = KEYS[i]
  rooms[#rooms + 1] = ARGV[i]
end
return return_leases(KEYS[1], ARGV[1], counters, rooms) and 1 or 0
