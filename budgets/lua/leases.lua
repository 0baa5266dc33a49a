-- Shared prelude of reserve.lua, settle.lua and read.lua (budgets/scripts.py prepends it).
-- Every script that uses it takes integers as its arguments, A[1], A[2], ... (its ARGV,
-- each a decimal string). The first three are the same for every script:
--   A[1] now, epoch milliseconds (from the caller's clock; never redis TIME)
--   A[2] at most this many expired leases are released per call
--   A[3] seconds a released lease record is kept so that a late settle still bills
-- Numbers go to redis.call as text wherever they can (an argument passed on as it came, a
-- count written '0'): Redis prints a Lua number anew, with the C library's floating-point
-- formatting, in every call given one.
--
-- A scope key is a HASH with 'used' and 'reserved' tokens (plus 'cost_micros' and
-- 'alerted' on the brand month); its committed usage is used + reserved.
--
-- Outstanding reservations of a brand are members of the ZSET cg:{b}:leases (member: the
-- lease record's key, score: lease expiry in epoch ms). A lease record is a STRING of
-- space-separated words (key names are percent-encoded, so they hold no spaces):
--   1 state  'r' reserved (outstanding, no TTL: it leaves with its lease),
--            'x' released by expiry (TTL A[3]), 's' settled (alone; TTL: settle's A[6])
--   2 tokens reserved
--   3..6 the scope keys it reserved on: user day, user month, brand month, conversation
--   7, 8 expiry (epoch s, caller's clock) of the day and month keys; 9 conversation TTL (s)
--   10 brand-month tokens at which the brand's alert fires (0: none); 11 brand limit

local A = ARGV

local function num(value)
  return tonumber(value) or 0
end

-- The words of a lease record (split with plain finds: a pattern iterator costs more).
local find, sub = string.find, string.sub
local function words(text)
  local out, n, from = {}, 0, 1
  while true do
    local space = find(text, ' ', from, true)
    n = n + 1
    if not space then
      out[n] = sub(text, from)
      return out
    end
    out[n] = sub(text, from, space - 1)
    from = space + 1
  end
end

-- The lease record at `key` as a list of words, or nil.
local function read_lease(key)
  local text = redis.call('GET', key)
  if not text then return nil end
  return words(text)
end

-- Expire `key` at `at_s` (epoch s) of the caller's clock. The TTL is relative (EXPIRE,
-- not EXPIREAT) so that keys live as long as the caller's time says, whatever the
-- server's wall clock: a skewed or test clock never deletes a live period's key.
local function expire_at(key, at_s)
  local ttl = math.max(1, tonumber(at_s) - math.floor(tonumber(A[1]) / 1000))
  redis.call('EXPIRE', key, string.format('%d', ttl))
end

-- Give back `amount` reserved tokens (the lease record's word for them: passed on as
-- text, with no number made of it and printed back) on a scope key, never below zero.
-- Answers true when the key did not hold them (it had expired and HINCRBY made it anew).
local function unreserve(key, amount)
  if amount == '0' then return redis.call('EXISTS', key) == 0 end
  if redis.call('HINCRBY', key, 'reserved', '-' .. amount) < 0 then
    redis.call('HSET', key, 'reserved', '0')
    return true
  end
  return false
end

-- Release every outstanding reservation of the brand whose lease ended at or before now:
-- its tokens go back to its four scopes (those still there: a key whose period ended
-- must not come back without its TTL) and its record is kept as 'x' for late settles.
local function release_expired(leases)
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', A[1], 'LIMIT', '0', A[2])
  for _, lease in ipairs(expired) do
    local text = redis.call('GET', lease)
    if text and string.sub(text, 1, 1) == 'r' then
      local r = words(text)
      for i = 3, 6 do
        if redis.call('EXISTS', r[i]) == 1 then unreserve(r[i], r[2]) end
      end
      redis.call('SET', lease, 'x' .. string.sub(text, 2), 'EX', A[3])
    end
    redis.call('ZREM', leases, lease)
  end
end
