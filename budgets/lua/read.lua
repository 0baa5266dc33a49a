-- Read scope keys after releasing expired leases, so readers see honest figures.
-- KEYS[1] the brand's leases ZSET  KEYS[2..n] scope keys (HASH)
-- ARGV: the integers A[1..3] of leases.lua
-- Returns one {used, reserved, cost_micros, alerted} per scope key, in KEYS order.
release_expired(KEYS[1])

local out = {}
for i = 2, #KEYS do
  local r = redis.call('HMGET', KEYS[i], 'used', 'reserved', 'cost_micros', 'alerted')
  out[#out + 1] = {num(r[1]), num(r[2]), num(r[3]), num(r[4])}
end
return out
