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
