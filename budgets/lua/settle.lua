-- Replace a reservation with the actual usage, once per request id.
-- KEYS[1] the request's lease record  KEYS[2] the brand's leases ZSET
-- ARGV: the integers A[1..6]:
--   A[1..3] as in leases.lua
--   A[4] actual tokens  A[5] cost in micro-dollars  A[6] TTL (s) of the settled marker
-- Usage lands in the periods the reservation was made in (its record names the keys),
-- also after its lease expired (then only 'used' changes: the reservation was already
-- given back). Actual usage above the reservation is recorded in full.
-- The brand month's 'alerted' flag is set (HSETNX) by the one settle that takes its
-- used tokens to the alert level, so exactly one caller per period reports the crossing.
-- Returns (compact): 0 nothing to settle (unknown, settled already, or record gone),
--   1 settled, or, when this settle crossed the alert level, the string
--   'used alert_level brand_limit cost_micros brand_month_key' of the brand month.
-- Other leases that ran out are released by the next reserve or read: those are the
-- calls whose answers depend on them (a settle of its own lease handles either state).
local r = read_lease(KEYS[1])
if not r or (r[1] ~= 'r' and r[1] ~= 'x') then return 0 end
if r[1] == 'r' then redis.call('ZREM', KEYS[2], KEYS[1]) end

-- A scope key still holding this reservation has its TTL; one that is gone (its period
-- ended) or may be (the lease expired) gets it again.
local used = 0
local expiry = {r[7], r[8], r[8]}
for i = 3, 6 do
  local recreated = r[1] == 'x' or unreserve(r[i], r[2])
  local now_used = redis.call('HINCRBY', r[i], 'used', A[4])
  if i == 5 then used = now_used end
  if recreated then
    if i < 6 then expire_at(r[i], expiry[i - 2]) else redis.call('EXPIRE', r[6], r[9]) end
  end
end

local cost = redis.call('HINCRBY', r[5], 'cost_micros', A[5])
local alert_at = num(r[10])
local crossed = alert_at > 0 and used >= alert_at
  and redis.call('HSETNX', r[5], 'alerted', '1') == 1

redis.call('SET', KEYS[1], 's', 'EX', A[6])
if crossed then
  return string.format('%d %d %d %d %s', used, alert_at, num(r[11]), cost, r[5])
end
return 1
