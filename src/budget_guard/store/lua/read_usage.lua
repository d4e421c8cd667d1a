-- read_usage.lua: where many budgets stand, in one call (see store/usage.py). Read-only:
-- nothing to keep atomic; one reply instead of a reply per counter, which is most of
-- what reading ten thousand budgets costs the client.
--
-- ARGV[1]    a counter's fields, space-separated
-- ARGV[2]    a burst pool's fields, space-separated
-- ARGV[3]    how many top users of a template
-- ARGV[4..]  per budget: "c <pools>", or "u <pools> <limit>" for a per-user template
--            (its per-user limit in micro-USD)
-- KEYS       per budget: its counter (a template: its users index), then its pools'
--
-- Returns per budget {main, pool...}: main is the counter's fields, or, for a template,
-- {users tracked, users at the limit, {user, score, ...} of its top users}; each
-- pool is its fields. A missing field is nil.

local counter_fields = split(ARGV[1], ' ')
local pool_fields = split(ARGV[2], ' ')
local out = {}
local k = 1
local last_top = tonumber(ARGV[3]) - 1
for i = 4, #ARGV do
  local kind, pools, limit = string.match(ARGV[i], '^(%a) (%d+) ?(%d*)$')
  local entry = {}
  local key = KEYS[k]
  if kind == 'u' then
    entry[1] = {
      redis.call('ZCARD', key),
      redis.call('ZCOUNT', key, limit, '+inf'),
      redis.call('ZREVRANGE', key, 0, last_top, 'WITHSCORES'),
    }
  else
    entry[1] = redis.call('HMGET', key, unpack(counter_fields))
  end
  k = k + 1
  for p = 1, tonumber(pools) do
    entry[p + 1] = redis.call('HMGET', KEYS[k], unpack(pool_fields))
    k = k + 1
  end
  out[#out + 1] = entry
end
return out
