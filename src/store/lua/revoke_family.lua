-- revoke_family.lua: mark a family revoked, keeping it as a tombstone until it expires.
--
-- KEYS[1]  family hash         <prefix>fam:{<family_id>}
-- KEYS[2]  sealed successor    <prefix>fam:{<family_id>}:next
-- ARGV[1]  reason (logout, logout_all, reuse, admin, user_disabled, replaced)
-- ARGV[2]  now, ms since the epoch
--
-- Returns one of
--   "revoked"           the family was live and is now revoked
--   "already_revoked"   it was revoked before (the first reason is kept)
--   "expired"           it is missing, or its idle/absolute expiry has passed
-- Expiry is judged first, as the memory store does: an expired tombstone is simply gone.
local f = redis.call('HMGET', KEYS[1], 'uid', 'exp', 'revoked')
if not f[1] or tonumber(ARGV[2]) >= tonumber(f[2]) then
  return 'expired'
end
if f[3] then
  return 'already_revoked'
end
redis.call('HSET', KEYS[1], 'revoked', ARGV[1], 'revoked_at', ARGV[2])
redis.call('DEL', KEYS[2])
return 'revoked'
