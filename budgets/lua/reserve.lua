-- Reserve tokens on four scopes at once, all or nothing.
-- KEYS[1] user day  KEYS[2] user month  KEYS[3] brand month  KEYS[4] conversation
-- KEYS[5] the brand's leases ZSET  KEYS[6] this request's lease record
-- ARGV: the integers A[1..14]:
--   A[1..3] as in leases.lua
--   A[4] tokens to reserve
--   A[5..8] limits of KEYS[1..4] in tokens, -1 unlimited
--   A[9] lease expiry (epoch ms)
--   A[10] day key expiry, A[11] month key expiry (epoch s: end of period + margin)
--   A[12] conversation TTL (s)
--   A[13] brand-month tokens at which the brand's alert fires (0: none)
--   A[14] the least the reservation may shrink to, to fit what a limited conversation has
--         left (the prompt plus one answer token); 0: reserve exactly A[4] or refuse
-- A scope admits the reservation only if used + reserved + tokens <= limit; the first
-- scope (in KEYS order) that would overflow refuses it and nothing is written.
-- Returns (compact, so the client parses one reply line):
--   an integer >= 0: reserved that many tokens (also when this request id holds a
--                    reservation already: that one, not a second);
--   -1: this request id was already settled or released;
--   a string 'scope limit committed' (scope 1..4): refused.
release_expired(KEYS[5])

local previous = read_lease(KEYS[6])
if previous then
  if previous[1] == 'r' then return num(previous[2]) end
  return -1
end

local tokens = tonumber(A[4])
local text = A[4]  -- tokens as the commands take them (a number is printed anew each time)
local least, conversation_limit = tonumber(A[14]), tonumber(A[8])
if least > 0 and conversation_limit >= 0 then
  local r = redis.call('HMGET', KEYS[4], 'used', 'reserved')
  local left = conversation_limit - num(r[1]) - num(r[2])
  tokens = math.max(least, math.min(tokens, left))
  text = string.format('%d', tokens)
end
local absent = {}  -- per limited scope: its key did not exist (nil: not read)
for i = 1, 4 do
  local limit = tonumber(A[4 + i])
  if limit >= 0 then
    local r = redis.call('HMGET', KEYS[i], 'used', 'reserved')
    local committed = num(r[1]) + num(r[2])
    if committed + tokens > limit then
      return string.format('%d %d %d', i, limit, committed)
    end
    absent[i] = not r[1] and not r[2]
  end
end

-- A period key gets its TTL when it is new: a key read above as present has had it set
-- (every script that creates a scope key sets its TTL in the same call); one not read
-- may be new when nothing was reserved on it before. The conversation's TTL slides: set
-- again whenever nothing else is in flight on it.
local expiry = {A[10], A[11], A[11]}
for i = 1, 4 do
  local reserved = redis.call('HINCRBY', KEYS[i], 'reserved', text)
  if i == 4 then
    if reserved == tokens then redis.call('EXPIRE', KEYS[4], A[12]) end
  elseif absent[i] or (absent[i] == nil and reserved == tokens) then
    expire_at(KEYS[i], expiry[i])
  end
end
redis.call('SET', KEYS[6], table.concat({'r', text, KEYS[1], KEYS[2], KEYS[3], KEYS[4],
  A[10], A[11], A[12], A[13], A[7]}, ' '))
redis.call('ZADD', KEYS[5], A[9], KEYS[6])
return tokens
