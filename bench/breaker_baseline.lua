-- The baseline for redis-benchmark (bench/breakers.py): a script comparable to Rebound's breaker scripts
-- (recovery/breaker_lua.py) on a closed breaker, without their state machine. Same four keys, same arguments
-- (the now-or-0 clock, the eleven settings, the permit id; a record adds failure, ignored, retry_after_ms and
-- frozen), and the Redis commands a closed breaker's permit or record makes:
--   TIME; HGETALL the state hash into a table; when recording, RPUSH the outcome onto the count window and
--   LPOP the oldest once it holds more than window_size; LLEN the window; HSET the eight state fields back;
--   reply with the same ten values.
-- What it leaves out: the state machine's branches (advance, trip, open), the closures and the parsing of the
-- whole configuration, and the extra LLENs of Rebound's window fitting. Counted with INFO commandstats on a
-- closed breaker with a full window: a permit makes 4 commands here and 5 in Rebound's script (TIME, HGETALL,
-- 2 LLEN, HSET), a record 7 here and 12 in Rebound's (TIME, HGETALL, RPUSH, LPOP, 7 LLEN, HSET).
-- redis-benchmark runs it from C, with no client library: the floor for one client's round trips.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local st = {}
local raw = redis.call('HGETALL', KEYS[1])
for i = 1, #raw, 2 do st[raw[i]] = raw[i + 1] end
local wsize = tonumber(ARGV[3])
if #ARGV > 13 then
  redis.call('RPUSH', KEYS[2], ARGV[14])
  if redis.call('LLEN', KEYS[2]) > wsize then redis.call('LPOP', KEYS[2]) end
end
local calls = redis.call('LLEN', KEYS[2])
local state = st.state or 'closed'
redis.call('HSET', KEYS[1], 'state', state, 'opened_at', 0, 'open_until', 0, 'wait_ms', 0,
  'consecutive', 0, 'ho_ok', 0, 'wf', 0, 'win_type', ARGV[2])
return {state, 1, 0, ARGV[13], state, calls, 0, 0, -1, -1}
