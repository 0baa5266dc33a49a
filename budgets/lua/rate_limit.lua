-- GCRA (generic cell rate algorithm) for a user and their brand, checked together:
-- a request is admitted only if both admit it, and only then are both updated.
-- KEYS[1] the user's GCRA key  KEYS[2] the brand's GCRA key (STRING: theoretical
-- arrival time, epoch microseconds; expires when the bucket is full again)
-- ARGV[1] now (epoch us, from the caller's clock)
-- ARGV[2] user emission interval (us)  ARGV[3] user burst (requests)
-- ARGV[4] brand emission interval (us) ARGV[5] brand burst (requests)
-- A limit of L requests per period P is interval P/L with burst L: L requests at once,
-- then one per interval.
-- Returns {1, 0, 0} allowed, {0, retry after (us), scope 1 user | 2 brand} refused.
local now = tonumber(ARGV[1])

local function gcra(key, interval, burst)
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  return new_tat, new_tat - interval * burst - now
end

local function store(key, tat)
  local ttl_ms = math.ceil((tat - now) / 1000)
  redis.call('SET', key, string.format('%d', tat), 'PX', string.format('%d', ttl_ms))
end

local user_tat, user_wait = gcra(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
local brand_tat, brand_wait = gcra(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5]))
if user_wait > 0 or brand_wait > 0 then
  if user_wait >= brand_wait then return {0, user_wait, 1} end
  return {0, brand_wait, 2}
end
store(KEYS[1], user_tat)
store(KEYS[2], brand_tat)
return {1, 0, 0}
