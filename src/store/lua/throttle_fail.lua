-- Counts one failed login under a throttle key, atomically.
-- KEYS[1] throttle hash {n, until, forget}
-- ARGV: free, base_ms, max_ms, window_ms, now
-- Returns the lock end in ms, or 0 while failures are still free.
local free = tonumber(ARGV[1])
local base = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local now = tonumber(ARGV[5])

-- Judged against the caller's clock, like every other expiry; PEXPIRE only cleans up.
local forget = tonumber(redis.call('HGET', KEYS[1], 'forget') or '0')
if forget > 0 and now >= forget then
  redis.call('DEL', KEYS[1])
end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
local lock_until = 0
if n > free then
  local over = n - free - 1
  if over > 40 then over = 40 end
  local delay = base * (2 ^ over)
  if delay > max then delay = max end
  lock_until = now + delay
  redis.call('HSET', KEYS[1], 'until', string.format('%d', lock_until))
end
local keep = window
if lock_until > now then keep = keep + (lock_until - now) end
redis.call('HSET', KEYS[1], 'forget', string.format('%d', now + keep))
redis.call('PEXPIRE', KEYS[1], string.format('%d', keep))
return string.format('%d', lock_until)
