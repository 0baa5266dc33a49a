-- Reserve tokens on four scopes at once, all or nothing.
-- KEYS[1] user day  KEYS[2] user month  KEYS[3] brand month  KEYS[4] conversation
-- KEYS[5] the brand's leases ZSET  KEYS[6] this request's lease record
-- ARGV[1..3] as in leases.lua
-- ARGV[4] tokens to reserve
-- ARGV[5..8] limits of KEYS[1..4] in tokens, -1 unlimited
-- ARGV[9] lease expiry (epoch ms)
-- ARGV[10] day key expiry, ARGV[11] month key expiry (epoch s: end of period + margin)
-- ARGV[12] conversation TTL (s)
-- ARGV[13] brand-month tokens at which the brand's alert fires (0: none)
-- A scope admits the reservation only if used + reserved + tokens <= limit; the first
-- scope (in KEYS order) that would overflow refuses it and nothing is written.
-- Returns {1, tokens} reserved (also when this request id holds a reservation already),
--         {0, scope 1..4, limit, committed} refused,
--         {-1} this request id was already settled or released.
release_expired(KEYS[5])

local previous = redis.call('HMGET', KEYS[6], 'st', 'tok')
if previous[1] == 'r' then return {1, num(previous[2])} end
if previous[1] then return {-1} end

local tokens = tonumber(ARGV[4])
for i = 1, 4 do
  local limit = tonumber(ARGV[4 + i])
  if limit >= 0 then
    local r = redis.call('HMGET', KEYS[i], 'used', 'reserved')
    local committed = num(r[1]) + num(r[2])
    if committed + tokens > limit then return {0, i, limit, committed} end
  end
end

for i = 1, 4 do redis.call('HINCRBY', KEYS[i], 'reserved', tokens) end
expire_at(KEYS[1], ARGV[10])
expire_at(KEYS[2], ARGV[11])
expire_at(KEYS[3], ARGV[11])
redis.call('EXPIRE', KEYS[4], ARGV[12])
redis.call('HSET', KEYS[6], 'st', 'r', 'tok', tokens,
  'ud', KEYS[1], 'um', KEYS[2], 'bm', KEYS[3], 'cv', KEYS[4],
  'dx', ARGV[10], 'mx', ARGV[11], 'cx', ARGV[12], 'al', ARGV[13], 'bl', ARGV[7])
redis.call('ZADD', KEYS[5], ARGV[9], KEYS[6])
return {1, tokens}
