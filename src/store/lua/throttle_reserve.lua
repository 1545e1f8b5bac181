-- throttle_reserve.lua: reserves one login attempt under a throttle key, atomically, before
-- the password is checked — so N attempts in parallel, on any number of gateways, are judged
-- one after another here and at most the free allowance goes on to Argon2.
--
-- KEYS[1]  throttle hash {n, until, forget}
-- ARGV     free, base_ms, max_ms, window_ms, now (ms)
--
-- Returns {"refused", until}  a delay is running: the attempt is refused and not counted;
--         {"granted", until}  the attempt is counted and may go on; until > 0 when it
--                             reached the allowance and starts (or doubles) the delay that
--                             the attempts after it wait out.
-- A success gives the attempt back (throttle_refund.lua) or forgets the key (DEL).
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
local locked = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if locked > now then
  return {'refused', string.format('%d', locked)}
end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
local lock_until = 0
if n >= free then
  local over = n - free
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
return {'granted', string.format('%d', lock_until)}
