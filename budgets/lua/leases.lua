-- Shared prelude of reserve.lua, settle.lua and read.lua (budgets/scripts.py prepends it).
-- It defines functions only. Every script that uses it takes the same first three ARGV:
--   ARGV[1] now, epoch milliseconds (from the caller's clock; never redis TIME)
--   ARGV[2] at most this many expired leases are released per call
--   ARGV[3] seconds a released lease record is kept so that a late settle still bills
--
-- Outstanding reservations of a brand are members of the ZSET cg:{b}:leases (member: the
-- lease record's key, score: lease expiry in epoch ms). A lease record is a HASH:
--   st  'r' reserved (outstanding), 'x' released by expiry, 's' settled
--   tok reserved tokens
--   ud, um, bm, cv  the four scope keys it reserved on (user day, user month,
--                   brand month, conversation)
--   dx, mx  expiry (epoch s, caller's clock) of the day and month keys; cx  conversation
--           TTL (s)
--   al  brand-month tokens at which the brand's alert fires (0: none); bl brand limit
-- A scope key is a HASH with 'used' and 'reserved' (plus 'cost_micros' and 'alerted' on
-- the brand month); its committed usage is used + reserved.

local function num(value)
  return tonumber(value) or 0
end

-- Expire `key` at `at_s` (epoch s) of the caller's clock. The TTL is relative (EXPIRE,
-- not EXPIREAT) so that keys live as long as the caller's time says, whatever the
-- server's wall clock: a skewed or test clock never deletes a live period's key.
local function expire_at(key, at_s)
  local ttl = math.max(1, tonumber(at_s) - math.floor(tonumber(ARGV[1]) / 1000))
  redis.call('EXPIRE', key, string.format('%d', ttl))
end

-- Give back `amount` reserved tokens on a scope key, never below zero, and only while
-- the key exists (a key whose period ended must not come back without its TTL).
local function unreserve(key, amount)
  if key and redis.call('EXISTS', key) == 1 then
    if redis.call('HINCRBY', key, 'reserved', -amount) < 0 then
      redis.call('HSET', key, 'reserved', 0)
    end
  end
end

-- Release every outstanding reservation of the brand whose lease ended at or before now:
-- its tokens go back to its four scopes and its record is kept (state 'x') for late settles.
local function release_expired(leases)
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
  for _, lease in ipairs(expired) do
    local r = redis.call('HMGET', lease, 'st', 'tok', 'ud', 'um', 'bm', 'cv')
    if r[1] == 'r' then
      for i = 3, 6 do unreserve(r[i], num(r[2])) end
      redis.call('HSET', lease, 'st', 'x')
      redis.call('EXPIRE', lease, ARGV[3])
    end
    redis.call('ZREM', leases, lease)
  end
end
