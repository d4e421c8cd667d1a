-- read_field.lua: one field of many hashes in one call, for reports (a budget's daily
-- history over thirteen months is some 400 hashes: one reply instead of 400).
-- Read-only; nothing to keep atomic, it only saves round trips and reply parsing.
--
-- KEYS[1..n] the hashes
-- ARGV[1]    the field
--
-- Returns the field's value in each hash, in order (false where there is none).

local values = {}
for i, key in ipairs(KEYS) do
  values[i] = redis.call('HGET', key, ARGV[1])
end
return values
