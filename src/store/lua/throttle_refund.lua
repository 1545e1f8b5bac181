-- throttle_refund.lua: gives back one reserved attempt (the login succeeded) without
-- creating a key that has expired, nor going below zero.
--
-- KEYS[1]  throttle hash {n, until, forget}
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
if n > 0 then
  redis.call('HINCRBY', KEYS[1], 'n', -1)
end
return 0
