-- rotate_family.lua: one atomic rotation of a refresh-token family (DESIGN.md §5).
--
-- KEYS[1]  family hash         <prefix>fam:{<family_id>}
-- KEYS[2]  sealed successor    <prefix>fam:{<family_id>}:next   (same hash tag, same slot)
-- ARGV[1]  SHA-256 of the presented secret
-- ARGV[2]  SHA-256 of the freshly minted successor secret
-- ARGV[3]  the successor, sealed (kept for the grace window only)
-- ARGV[4]  now, ms since the epoch (the gateway's clock: last use and idle expiry)
-- ARGV[5]  idle timeout, ms
-- ARGV[6]  reuse grace window, ms
-- ARGV[7]  the presented token's generation, or '' (a token from before generations)
-- ARGV[8]  SHA-256 of the secret the presented one replaced, as the cookie keeps it, or ''
--
-- Returns one of
--   {"rotated", uid, gen, exp, abs_exp}          presented == cur: successor is now cur
--   {"grace", uid, gen, exp, abs_exp, sealed}    presented == prev within the grace window
--                                                (or a sibling of cur, see below): the same
--                                                successor, never a new branch
--   {"behind", uid, gen, exp, abs_exp}           the store lost its last rotation and the
--                                                cookie proves it: successor is now cur
--   {"behind_unproven", uid}         ahead of the store without proof, or a sibling past the
--                                    grace window: family ended (reason=store_behind), no
--                                    theft alleged
--   {"reuse", uid}                   any other secret: family revoked (reason=reuse)
--   {"revoked"}                      family already revoked (a tombstone)
--   {"expired"}                      family missing, or idle/absolute expiry has passed
--
-- Lost writes (DESIGN.md §5): Redis acknowledges a rotation before a replica or the disk has
-- it, so after a failover the store can be one rotation behind the browser. A token whose
-- generation is ahead of the store's is therefore never a replay. One step ahead, with the
-- cookie's previous secret equal to the store's current one, the cookie proves the lost step
-- (only the newest cookie holds both secrets): rotate from the store's state. The same loss
-- can leave the browser's newest token a *sibling* of the store's current one (an older
-- request rotated the store's state again after the loss): same generation, same
-- predecessor; within the grace window that is the benign race the window exists for.
--
-- Numbers are written with string.format('%d') so that Lua's float formatting never turns a
-- timestamp into 1.7e+12.
--
-- One clock for grace: whether a replay of `prev` is within the grace window is judged by
-- Redis's own clock (TIME), the clock that also expires the sealed successor (PX), never by
-- the calling gateway's. `prev_at` is therefore Redis time: clock skew between gateway
-- instances can neither turn two tabs refreshing at once into a theft verdict nor stretch
-- the window for a real replay.
local f = redis.call('HMGET', KEYS[1], 'uid', 'cur', 'prev', 'prev_at', 'exp', 'abs_exp', 'revoked', 'gen')
local uid, cur, prev, prev_at, exp, abs_exp, revoked, gen = f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]
if not uid then
  return {'expired'}
end
-- Expiry first, as revoke_family.lua and the memory store judge it: an expired tombstone is
-- simply gone, whether or not Redis has dropped its key yet (another gateway's clock).
local now = tonumber(ARGV[4])
if now >= tonumber(exp) then
  return {'expired'}
end
if revoked then
  return {'revoked'}
end
local grace = tonumber(ARGV[6])
local time = redis.call('TIME')
local store_now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local presented_gen = tonumber(ARGV[7])
local store_gen = tonumber(gen)

-- Makes the successor current: `rotated_out` becomes prev (judged by Redis time for grace),
-- the family's expiry slides, the sealed successor is kept for the grace window.
local function advance(rotated_out, new_gen)
  local new_exp = math.min(now + tonumber(ARGV[5]), tonumber(abs_exp))
  redis.call('HSET', KEYS[1],
    'prev', rotated_out, 'prev_at', string.format('%d', store_now), 'cur', ARGV[2],
    'gen', string.format('%d', new_gen), 'last_used', ARGV[4],
    'exp', string.format('%d', new_exp))
  redis.call('PEXPIRE', KEYS[1], string.format('%d', new_exp - now))
  if grace > 0 then
    redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[6])
  else
    redis.call('DEL', KEYS[2])
  end
  return {string.format('%d', new_gen), string.format('%d', new_exp), abs_exp}
end

local function ended(reason)
  redis.call('HSET', KEYS[1], 'revoked', reason, 'revoked_at', ARGV[4])
  redis.call('DEL', KEYS[2])
end

if ARGV[1] == cur then
  local r = advance(cur, store_gen + 1)
  return {'rotated', uid, r[1], r[2], r[3]}
end

local within_grace = prev and store_now - tonumber(prev_at) <= grace
local sibling = presented_gen == store_gen and ARGV[8] ~= '' and ARGV[8] == prev
if within_grace and (ARGV[1] == prev or sibling) then
  local sealed = redis.call('GET', KEYS[2])
  if sealed then
    return {'grace', uid, gen, exp, abs_exp, sealed}
  end
end

-- A sibling past the grace window (or with no successor kept) is still a lost write's
-- artefact, never a replay of anything the store handed out: end the family, accuse nobody.
if sibling then
  ended('store_behind')
  return {'behind_unproven', uid}
end

if presented_gen and presented_gen > store_gen then
  if presented_gen == store_gen + 1 and ARGV[8] ~= '' and ARGV[8] == cur then
    local r = advance(ARGV[1], presented_gen + 1)
    return {'behind', uid, r[1], r[2], r[3]}
  end
  ended('store_behind')
  return {'behind_unproven', uid}
end

-- A rotated-out secret after the grace window, or an older generation: kill the family.
-- The hash stays (with its expiry) as a tombstone so that later replays are recognised.
ended('reuse')
return {'reuse', uid}
