-- The batch baseline for redis-benchmark (bench/breakers.py): a script comparable to Rebound's RECORD_MANY
-- (recovery/breakers/lua.py) on a closed breaker, without its state machine, taking the very same request: the
-- five keys and the arguments RedisStore.record_many sends for one service's batch (the now-or-0 clock, the
-- eleven settings, n, then seven values per outcome: permit id, failure, ignored, retry_after_ms, frozen, the
-- Retry-After asked for, the run's length; then the cap). One EVALSHA carries the whole batch, as Rebound's does.
--
-- What it does, as bench/breaker_baseline.lua does for one outcome: TIME and HGETALL of the state hash once;
-- for every outcome (a run of k counts k times) RPUSH it onto the count window, LPOP the oldest once the window
-- holds more than window_size, LLEN the window; HSET the eight state fields back once; reply with the clock, the
-- pending count, and six values per outcome (state, calls, failures, consecutive, override, transitions), the
-- shape of RECORD_MANY's reply. What it leaves out: the state machine's branches (advance, trip, open), the
-- closures, the run-length shortcuts and the window fitting. redis-benchmark runs it from C, with no client
-- library: the floor of one client sending the same batch.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local st = {}
local raw = redis.call('HGETALL', KEYS[1])
for i = 1, #raw, 2 do st[raw[i]] = raw[i + 1] end
local wsize = tonumber(ARGV[3])
local state = st.state or 'closed'
local n = tonumber(ARGV[13])
local out = {now, 0}
local failures = 0
for i = 0, n - 1 do
  local b = 14 + 7 * i
  local failed = ARGV[b + 1] == '1' and 1 or 0
  if ARGV[b] ~= '' then redis.call('ZREM', KEYS[4], ARGV[b]) end
  local calls = 0
  for _ = 1, tonumber(ARGV[b + 6]) or 1 do
    redis.call('RPUSH', KEYS[2], failed)
    if redis.call('LLEN', KEYS[2]) > wsize then redis.call('LPOP', KEYS[2]) end
    calls = redis.call('LLEN', KEYS[2])
  end
  failures = failures + failed
  out[#out + 1] = state; out[#out + 1] = calls; out[#out + 1] = failures; out[#out + 1] = 0
  out[#out + 1] = ''; out[#out + 1] = 0
end
redis.call('HSET', KEYS[1], 'state', state, 'opened_at', 0, 'open_until', 0, 'wait_ms', 0,
  'consecutive', 0, 'ho_ok', 0, 'wf', failures, 'win_type', ARGV[2])
return out
