"""The Redis store's Lua scripts: the same steps as logic.py, atomic inside Redis.

Keys (hash-tagged by service, so a cluster keeps them on one node): the state hash, the count window (a list of
0/1, oldest first, with the failures in it counted in the hash's `wf`), the time window (a hash of per-second
`<sec>c` / `<sec>f` counters) and the half-open trial permits (a sorted set scored by expiry).
ARGV: now in ms (0: Redis's own clock, so that every host agrees), then the configuration, then the call's.
Each script returns {state, allowed, retry_after_ms, permit_id, reason, calls, failures, consecutive,
snapshot_calls, snapshot_failures, from, to, why, from, to, why, ...}.
"""

PRELUDE = r"""
local S, WL, WH, TR = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local cfg = {wtype = ARGV[2], wsize = tonumber(ARGV[3]), threshold = tonumber(ARGV[4]), minc = tonumber(ARGV[5]),
  consec = tonumber(ARGV[6]), wait = tonumber(ARGV[7]), homax = tonumber(ARGV[8]), hosucc = tonumber(ARGV[9]),
  mult = tonumber(ARGV[10]), maxwait = tonumber(ARGV[11]), ttl = tonumber(ARGV[12])}
local st = {}
local raw = redis.call('HGETALL', S)
for i = 1, #raw, 2 do st[raw[i]] = raw[i + 1] end
local state = st.state or 'closed'
local opened_at = tonumber(st.opened_at or 0)
local open_until = tonumber(st.open_until or 0)
local wait_ms = tonumber(st.wait_ms or 0)
local consecutive = tonumber(st.consecutive or 0)
local ho_ok = tonumber(st.ho_ok or 0)
local wf = tonumber(st.wf or 0)
local wtype = st.win_type or 'count'
local wlen = -1  -- the count window's length, read once and then kept here (not an LLEN per step)
local trans = {}

local function note(from, to, why)
  trans[#trans + 1] = from; trans[#trans + 1] = to; trans[#trans + 1] = why
end
local function reset_window()
  redis.call('DEL', WL, WH); wf = 0; wlen = 0; consecutive = 0
end
local function fit_window()
  if wtype ~= cfg.wtype then redis.call('DEL', WL, WH); wf = 0; wlen = 0; wtype = cfg.wtype end
  if wtype == 'count' then
    if wlen < 0 then wlen = redis.call('LLEN', WL) end
    while wlen > cfg.wsize do
      if redis.call('LPOP', WL) == '1' then wf = wf - 1 end
      wlen = wlen - 1
    end
  end
end
local function counts()
  fit_window()
  if wtype == 'count' then return wlen, wf end
  local oldest = math.floor(now / 1000) - cfg.wsize
  local h = redis.call('HGETALL', WH)
  local c, f, dead = 0, 0, {}
  for i = 1, #h, 2 do
    if tonumber(string.sub(h[i], 1, -2)) <= oldest then dead[#dead + 1] = h[i]
    elseif string.sub(h[i], -1) == 'c' then c = c + tonumber(h[i + 1])
    else f = f + tonumber(h[i + 1]) end
  end
  if #dead > 0 then redis.call('HDEL', WH, unpack(dead)) end
  return c, f
end
local function push(failed)
  fit_window()
  if wtype == 'count' then
    wlen = redis.call('RPUSH', WL, failed and '1' or '0')
    if failed then wf = wf + 1 end
    fit_window()
  else
    local sec = tostring(math.floor(now / 1000))
    redis.call('HINCRBY', WH, sec .. 'c', 1)
    if failed then redis.call('HINCRBY', WH, sec .. 'f', 1) end
  end
end
local function open(wait, until_at)
  state = 'open'; opened_at = now; wait_ms = wait
  open_until = math.max(now + wait, until_at or 0)
  ho_ok = 0; redis.call('DEL', TR); reset_window()
end
local function advance()
  if state == 'open' and now >= open_until then
    state = 'half_open'; ho_ok = 0; redis.call('DEL', TR)
    note('open', 'half_open', 'the wait is over: trial calls allowed')
  end
  if state == 'half_open' then redis.call('ZREMRANGEBYSCORE', TR, '-inf', now) end
end
local function trip(c, f)
  if cfg.consec > 0 and consecutive >= cfg.consec then
    return string.format('%d consecutive failures (threshold %d)', consecutive, cfg.consec)
  end
  if c >= cfg.minc and 100.0 * f / c >= cfg.threshold then
    local span = 'the last ' .. cfg.wsize .. ' s'
    if wtype == 'count' then span = 'the last ' .. c .. ' calls' end
    return string.format('failure rate %.0f%% over %s (threshold %g%%)', 100.0 * f / c, span, cfg.threshold)
  end
  return nil
end
local function save()
  redis.call('HSET', S, 'state', state, 'opened_at', opened_at, 'open_until', open_until, 'wait_ms', wait_ms,
    'consecutive', consecutive, 'ho_ok', ho_ok, 'wf', wf, 'win_type', wtype)
end
"""

PERMIT = (
    PRELUDE
    + r"""
advance()
local allowed, retry, pid, reason = 1, 0, '', 'closed'
if state == 'open' then
  allowed = 0; retry = open_until - now; reason = 'open'
elseif state == 'half_open' then
  if redis.call('ZCARD', TR) < cfg.homax then
    pid = ARGV[13]; redis.call('ZADD', TR, now + cfg.ttl, pid); reason = 'half-open: a trial call'
  else
    local first = redis.call('ZRANGE', TR, 0, 0, 'WITHSCORES')
    allowed = 0; retry = math.max(1, tonumber(first[2]) - now)
    reason = 'half-open: all ' .. cfg.homax .. ' trial permits are in use'
  end
end
local c, f = counts()
save()
return {state, allowed, retry, pid, reason, c, f, consecutive, -1, -1, unpack(trans)}
"""
)

# One outcome: ARGV[13..17] = permit_id, failure, ignored, retry_after_ms, frozen. RECORD_MANY applies the same
# step to n outcomes of one service in order (ARGV[13] = n, then five values per outcome), reading and writing the
# state once: a batch of outcomes costs one script call per service instead of one per outcome.
RECORD_STEP = r"""
local function record_one(pid, failure, ignored, ra, frozen)
  trans = {}
  advance()
  if pid ~= '' then redis.call('ZREM', TR, pid) end
  local sc, sf = -1, -1
  if not ignored then
    local prev = state
    if ra > 0 and not frozen then
      if prev ~= 'open' or now + ra > open_until then
        sc, sf = counts()
        open(math.max(wait_ms, cfg.wait), now + ra)
        if prev ~= 'open' then note(prev, 'open', string.format('rate limited: Retry-After %g s', ra / 1000)) end
      end
    elseif prev == 'open' then
      -- a straggler's outcome: the window starts afresh at half-open
    elseif prev == 'half_open' and not frozen then
      if failure then
        local w = math.min(math.floor(math.max(wait_ms, cfg.wait) * cfg.mult), cfg.maxwait)
        sc, sf = counts()
        open(w)
        note('half_open', 'open', string.format('a trial call failed: open for %g s', w / 1000))
      else
        ho_ok = ho_ok + 1
        if ho_ok >= cfg.hosucc then
          state = 'closed'; wait_ms = 0; ho_ok = 0; redis.call('DEL', TR); reset_window()
          note('half_open', 'closed', cfg.hosucc .. ' trial calls succeeded')
        end
      end
    else
      push(failure)
      if failure then consecutive = consecutive + 1 else consecutive = 0 end
      if not frozen and prev == 'closed' then
        local c, f = counts()
        local why = trip(c, f)
        if why then sc, sf = c, f; open(cfg.wait); note('closed', 'open', why) end
      end
    end
  end
  local c, f = counts()
  return c, f, sc, sf
end
"""

# The single-outcome form: bench/breakers.py runs it under redis-benchmark for comparison.
RECORD = (
    PRELUDE
    + RECORD_STEP
    + r"""
local c, f, sc, sf = record_one(ARGV[13], ARGV[14] == '1', ARGV[15] == '1', tonumber(ARGV[16]), ARGV[17] == '1')
save()
return {state, 1, 0, '', '', c, f, consecutive, sc, sf, unpack(trans)}
"""
)

# Returns, per outcome: state, calls, failures, consecutive, snapshot calls, snapshot failures, the number of
# transitions, then from, to, why for each.
RECORD_MANY = (
    PRELUDE
    + RECORD_STEP
    + r"""
local out = {}
local n = tonumber(ARGV[13])
for i = 0, n - 1 do
  local b = 14 + 5 * i
  local c, f, sc, sf = record_one(ARGV[b], ARGV[b + 1] == '1', ARGV[b + 2] == '1', tonumber(ARGV[b + 3]),
    ARGV[b + 4] == '1')
  out[#out + 1] = state; out[#out + 1] = c; out[#out + 1] = f; out[#out + 1] = consecutive
  out[#out + 1] = sc; out[#out + 1] = sf; out[#out + 1] = #trans / 3
  for _, v in ipairs(trans) do out[#out + 1] = v end
end
save()
return out
"""
)

# Read-only: what a permit would see, without changing anything (for GET /breakers and the admin).
PEEK = r"""
local S, WL, WH = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local wtype, wsize = ARGV[2], tonumber(ARGV[3])
local st = {}
local raw = redis.call('HGETALL', S)
for i = 1, #raw, 2 do st[raw[i]] = raw[i + 1] end
local c, f = 0, 0
if (st.win_type or 'count') == wtype then
  if wtype == 'count' then
    local items = redis.call('LRANGE', WL, -wsize, -1)
    c = #items
    for _, v in ipairs(items) do if v == '1' then f = f + 1 end end
  else
    local oldest = math.floor(now / 1000) - wsize
    local h = redis.call('HGETALL', WH)
    for i = 1, #h, 2 do
      if tonumber(string.sub(h[i], 1, -2)) > oldest then
        if string.sub(h[i], -1) == 'c' then c = c + tonumber(h[i + 1]) else f = f + tonumber(h[i + 1]) end
      end
    end
  end
end
return {st.state or 'closed', tonumber(st.opened_at or 0), tonumber(st.open_until or 0), c, f,
  tonumber(st.consecutive or 0), redis.call('ZCOUNT', KEYS[4], now + 1, '+inf'), now}
"""
