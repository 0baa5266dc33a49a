-- Replace a reservation with the actual usage, once per request id.
-- KEYS[1] the request's lease record  KEYS[2] the brand's leases ZSET
-- ARGV[1..3] as in leases.lua
-- ARGV[4] actual tokens  ARGV[5] cost in micro-dollars  ARGV[6] TTL (s) of the settled marker
-- Usage lands in the periods the reservation was made in (its record names the keys),
-- also after its lease expired (then only 'used' changes: the reservation was already
-- given back). Actual usage above the reservation is recorded in full.
-- The brand month's 'alerted' flag is set (HSETNX) by the one settle that takes its
-- used tokens to the alert level, so exactly one caller per period reports the crossing.
-- Returns {0} nothing to settle (unknown, settled already, or record gone),
--         {1, crossed 0|1, brand month used, alert level, brand limit, cost micros,
--          brand month key}.
release_expired(KEYS[2])

local r = redis.call('HMGET', KEYS[1], 'st', 'tok', 'ud', 'um', 'bm', 'cv',
  'dx', 'mx', 'cx', 'al', 'bl')
if r[1] ~= 'r' and r[1] ~= 'x' then return {0} end
if r[1] == 'r' then
  for i = 3, 6 do unreserve(r[i], num(r[2])) end
  redis.call('ZREM', KEYS[2], KEYS[1])
end

local actual = tonumber(ARGV[4])
for i = 3, 6 do redis.call('HINCRBY', r[i], 'used', actual) end
expire_at(r[3], r[7])
expire_at(r[4], r[8])
expire_at(r[5], r[8])
redis.call('EXPIRE', r[6], r[9])

local cost = redis.call('HINCRBY', r[5], 'cost_micros', ARGV[5])
local used = num(redis.call('HGET', r[5], 'used'))
local alert_at = num(r[10])
local crossed = 0
if alert_at > 0 and used >= alert_at and redis.call('HSETNX', r[5], 'alerted', 1) == 1 then
  crossed = 1
end

redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'st', 's')
redis.call('EXPIRE', KEYS[1], ARGV[6])
return {1, crossed, used, alert_at, num(r[11]), cost, r[5]}
