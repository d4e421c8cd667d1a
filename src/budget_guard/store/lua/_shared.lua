-- _shared.lua: helpers prepended to every script that uses them (see store/scripts.py).
-- It declares no KEYS or ARGV of its own; each helper says which keys it touches.

-- Reports, once per counter, each soft threshold that usage has reached, and
-- exhaustion (100: usage at the limit, or a request denied), not reported before. The counter's "hwm" field holds
-- the highest percent reported, so concurrent requests and repeated settlements
-- report each crossing exactly once per counter (a counter is one budget period).
--   counter:    counter hash (fields used: hwm)
--   thresholds: "70:7000000,80:8000000" (percent:amount in micro-USD)
--   exhausted:  true when a request was just denied by this counter
--   labels:     {budget, period, subject} for the event
-- Returns the crossed percents, comma-joined ("" when none).
local function report_crossings(counter, limit, thresholds, used, exhausted, labels, stream,
                                maxlen, now)
  local hwm = tonumber(redis.call('HGET', counter, 'hwm')) or 0
  local crossed = {}
  for percent, amount in string.gmatch(thresholds, '(%d+):(%d+)') do
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

local function used_of(key)
  local values = redis.call('HMGET', key, 'spent', 'reserved')
  return (tonumber(values[1]) or 0) + (tonumber(values[2]) or 0)
end

local function split(text, separator)
  local parts = {}
  if text == nil or text == '' then
    return parts
  end
  for part in string.gmatch(text .. separator, '(.-)' .. separator) do
    parts[#parts + 1] = part
  end
  return parts
end
