"""The Redis store's Lua scripts: the same steps as logic.py, atomic inside Redis.

Keys (hash-tagged by service, so a cluster keeps them on one node): the state hash, the count window (a list of
0/1, oldest first, with the failures in it counted in the hash's `wf`), the time window (a hash of per-second
`<sec>c` / `<sec>f` counters), the half-open trial permits (a sorted set scored by expiry) and the transitions
whose rows are not known to be written yet (a list of JSON objects, oldest first).
ARGV: now in ms (0: Redis's own clock, so that every host agrees), then the configuration (ARGV[2..12]), then
the call's, then MAX_RETRY_AFTER_S in ms (no open-until further away than that is ever kept or read).

A missing or unreadable state hash is never taken for a closed breaker: the scripts answer {'rebuild'} and
change nothing, and the store rebuilds the state from the breaker's last transition in the database (RESTORE)
before it asks again. A Redis restart without persistence, an eviction or a stray DEL all look like that.

Each transition in a reply is ten values: from, to, why, seq, then the window before it (calls, failures,
consecutive), for an opening open-until and the wait, and the health check whose verdict made it ('' if none).
"""

PENDING_MAX = 1000  # as logic.PENDING_MAX

PRELUDE = (
    r"""
local S, WL, WH, TR = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local P = KEYS[5] or (string.gsub(S, ':state$', ':pending'))
local PENDING_MAX = """
    + str(PENDING_MAX)
    + r"""
local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local cfg = {wtype = ARGV[2], wsize = tonumber(ARGV[3]), threshold = tonumber(ARGV[4]), minc = tonumber(ARGV[5]),
  consec = tonumber(ARGV[6]), wait = tonumber(ARGV[7]), homax = tonumber(ARGV[8]), hosucc = tonumber(ARGV[9]),
  mult = tonumber(ARGV[10]), maxwait = tonumber(ARGV[11]), ttl = tonumber(ARGV[12])}
local state, opened_at, open_until, wait_ms, consecutive, ho_ok, wf, wtype = 'closed', 0, 0, 0, 0, 0, 0, 'count'
local gen, tseq, ovr, ovr_until, ovr_reason = '', 0, 'auto', 0, ''
local wlen = -1  -- the count window's length, read once and then kept here (not an LLEN per step)
local trans = {}
local by_check = ''  -- the health check whose verdict makes the next transition (VERDICT sets it)
local STATES = {closed = true, open = true, half_open = true}
local OVERRIDES = {auto = true, forced_open = true, forced_closed = true, disabled = true}

-- A stored number as a whole number, or nil when it is none (text, NaN, infinite).
local function whole(v)
  local n = tonumber(v)
  if n == nil or n ~= n or n == math.huge or n == -math.huge then return nil end
  return math.floor(n)
end
local function clamp(n, lo, hi)
  if n < lo then return lo end
  if n > hi then return hi end
  return n
end
-- Read the state hash: false when what decides the state is missing or unreadable, or the hash has no
-- generation (written before generations, with no override in it): then it is rebuilt from history. Numbers out
-- of range are clamped (an open-until beyond now + cap comes back to it), the rest falls back to defaults.
local function load(cap)
  local st = {}
  local raw = redis.call('HGETALL', S)
  for i = 1, #raw, 2 do st[raw[i]] = raw[i + 1] end
  local a, b, c = whole(st.opened_at), whole(st.open_until), whole(st.wait_ms)
  if not STATES[st.state] or not (a and b and c) or (st.gen or '') == '' then return false end
  state = st.state
  opened_at = clamp(a, 0, now); open_until = clamp(b, 0, now + cap); wait_ms = clamp(c, 0, cap)
  consecutive = clamp(whole(st.consecutive) or 0, 0, 2147483648)
  ho_ok = clamp(whole(st.ho_ok) or 0, 0, 2147483648)
  wf = clamp(whole(st.wf) or 0, 0, 2147483648)
  -- An unknown window type never equals the configured one: the window starts afresh.
  wtype = st.win_type
  if wtype ~= 'count' and wtype ~= 'time' then wtype = '?' end
  gen = st.gen
  tseq = clamp(whole(st.tseq) or 0, 0, 9007199254740992)
  if OVERRIDES[st.ovr] then
    ovr = st.ovr; ovr_until = clamp(whole(st.ovr_until) or 0, 0, 9007199254740992); ovr_reason = st.ovr_reason or ''
  end
  return true
end
local function override_now()
  if ovr ~= 'auto' and (ovr_until == 0 or now < ovr_until) then return ovr end
  return ''
end
local function reset_window()
  redis.call('DEL', WL, WH); wf = 0; wlen = 0; consecutive = 0
end
local function fit_window()
  if wtype ~= cfg.wtype then redis.call('DEL', WL, WH); wf = 0; wlen = 0; wtype = cfg.wtype end
  if wtype == 'count' then
    if wlen < 0 then wlen = redis.call('LLEN', WL); wf = math.min(wf, wlen) end
    while wlen > cfg.wsize do
      if redis.call('LPOP', WL) == '1' then wf = math.max(0, wf - 1) end
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
    local sec = tonumber(string.sub(h[i], 1, -2))
    if sec == nil or sec <= oldest then dead[#dead + 1] = h[i]
    elseif string.sub(h[i], -1) == 'c' then c = c + (whole(h[i + 1]) or 0)
    else f = f + (whole(h[i + 1]) or 0) end
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
local function open(wait, until_at, cap)
  state = 'open'; opened_at = now; wait_ms = math.min(wait, cap)
  open_until = math.min(math.max(now + wait_ms, until_at or 0), now + cap)
  ho_ok = 0; redis.call('DEL', TR); reset_window()
end
-- A transition: in the reply, and in the pending list until its row is written. c, f, k: the window (calls,
-- failures, consecutive) as it was before the transition emptied it.
local function note(from, to, why, c, f, k)
  tseq = tseq + 1
  local seq = gen .. '.' .. tseq
  local ou, w = 0, 0
  if to == 'open' then ou = open_until; w = wait_ms end
  for _, v in ipairs({from, to, why, seq, c, f, k, ou, w, by_check}) do trans[#trans + 1] = v end
  redis.call('RPUSH', P, cjson.encode({seq = seq, from = from, to = to, why = why, at = now, calls = c,
    failures = f, consecutive = k, open_until = ou, wait_ms = w, check = by_check}))
  redis.call('LTRIM', P, -PENDING_MAX, -1)
end
local function advance()
  if state == 'open' and now >= open_until then
    local c, f = counts()
    state = 'half_open'; ho_ok = 0; redis.call('DEL', TR)
    note('open', 'half_open', 'the wait is over: trial calls allowed', c, f, consecutive)
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
    'consecutive', consecutive, 'ho_ok', ho_ok, 'wf', wf, 'win_type', wtype, 'tseq', tseq)
end
"""
)

PERMIT = (
    PRELUDE
    + r"""
local cap = tonumber(ARGV[14]) or 86400000
if not load(cap) then return {'rebuild'} end
local forced = override_now()
local allowed, retry, pid, reason = 1, 0, '', 'closed'
if forced ~= '' then
  -- The operator decides: the automatic state does not move, and no trial permit is taken.
  if forced == 'forced_open' then allowed = 0 end
  reason = forced .. ' by an operator: ' .. ovr_reason
else
  advance()
  if state == 'open' then
    allowed = 0; retry = open_until - now; reason = 'open'
  elseif state == 'half_open' then
    if redis.call('ZCARD', TR) < cfg.homax then
      pid = ARGV[13]; redis.call('ZADD', TR, now + cfg.ttl, pid); reason = 'half-open: a trial call'
    else
      -- logic.trials_full_wait: come back after the service's base open wait at most (a trial usually ends
      -- well within it), never past the soonest permit's expiry (its TTL), at least 1 ms.
      local first = redis.call('ZRANGE', TR, 0, 0, 'WITHSCORES')
      allowed = 0; retry = math.max(1, math.min(tonumber(first[2]) - now, cfg.wait))
      reason = string.format('half-open: all %d trial permits are in use: ask again in %g s', cfg.homax,
        retry / 1000)
    end
  end
end
local c, f = counts()
save()
local shown = state
if forced ~= '' then shown = forced end
return {shown, allowed, retry, pid, reason, c, f, consecutive, forced, redis.call('LLEN', P), now, unpack(trans)}
"""
)

# One outcome: permit_id, failure, ignored, retry_after_ms (capped), frozen, and the Retry-After asked for (in
# seconds) when it was over the cap. record_one adds the transitions it makes to `trans` (its caller empties it).
# record_run applies a run of k identical outcomes in order, with the very same result as k record_one calls, in
# O(1) Redis commands for the common runs (successes or stragglers; see push_many and run_safe) rather than O(k).
# RECORD_MANY applies runs of one service in order (ARGV[13] = n, then seven values per run: the six above and
# the run's length), reading and writing the state once: a batch costs one script call per service.
RECORD_STEP = r"""
local function record_one(pid, failure, ignored, ra, frozen, asked, cap)
  if override_now() ~= '' then frozen = true end
  advance()
  if pid ~= '' then redis.call('ZREM', TR, pid) end
  if not ignored then
    local prev = state
    if ra > 0 and not frozen then
      ra = math.min(ra, cap)
      if prev ~= 'open' or now + ra > open_until then
        local c, f = counts()
        local k = consecutive
        open(math.max(wait_ms, cfg.wait), now + ra, cap)
        if prev ~= 'open' then
          local why = string.format('rate limited: Retry-After %g s', ra / 1000)
          if asked * 1000 > ra then
            why = string.format('rate limited: Retry-After %g s, capped at %g s (MAX_RETRY_AFTER_S)', asked, ra / 1000)
          end
          note(prev, 'open', why, c, f, k)
        end
      end
    elseif prev == 'open' then
      -- a straggler's outcome: the window starts afresh at half-open
    elseif prev == 'half_open' and not frozen then
      if failure then
        local w = math.floor(math.min(math.max(wait_ms, cfg.wait) * cfg.mult, cfg.maxwait, cap))
        local c, f = counts()
        local k = consecutive
        open(w, 0, cap)
        note('half_open', 'open', string.format('a trial call failed: open for %g s', w / 1000), c, f, k)
      else
        ho_ok = ho_ok + 1
        if ho_ok >= cfg.hosucc then
          local c, f = counts()
          local k = consecutive
          state = 'closed'; wait_ms = 0; ho_ok = 0; redis.call('DEL', TR); reset_window()
          note('half_open', 'closed', cfg.hosucc .. ' trial calls succeeded', c, f, k)
        end
      end
    else
      push(failure)
      if failure then consecutive = consecutive + 1 else consecutive = 0 end
      if not frozen and prev == 'closed' then
        local c, f = counts()
        local why = trip(c, f)
        if why then
          local k = consecutive  -- before the opening empties the window
          open(cfg.wait, 0, cap)
          note('closed', 'open', why, c, f, k)
        end
      end
    end
  end
  local c, f = counts()
  return c, f
end
-- n identical plain outcomes pushed into the window at once (what n push() calls leave): the count window drops
-- what falls out of it with one LRANGE and one LTRIM, the time window's second takes n in one HINCRBY.
local function push_many(n, failed)
  fit_window()
  local v = failed and '1' or '0'
  if wtype == 'count' then
    local keep = n
    if n >= cfg.wsize then
      redis.call('DEL', WL); wlen = 0; wf = 0; keep = cfg.wsize
    else
      local excess = wlen + n - cfg.wsize
      if excess > 0 then
        for _, x in ipairs(redis.call('LRANGE', WL, 0, excess - 1)) do
          if x == '1' then wf = math.max(0, wf - 1) end
        end
        redis.call('LTRIM', WL, excess, -1); wlen = wlen - excess
      end
    end
    local left = keep
    while left > 0 do
      local chunk, vals = math.min(left, 4000), {}
      for i = 1, chunk do vals[i] = v end
      wlen = redis.call('RPUSH', WL, unpack(vals)); left = left - chunk
    end
    if failed then wf = wf + keep end
  else
    local sec = tostring(math.floor(now / 1000))
    redis.call('HINCRBY', WH, sec .. 'c', n)
    if failed then redis.call('HINCRBY', WH, sec .. 'f', n) end
  end
end
-- How many of a run of plain outcomes (no permit, not ignored, no Retry-After) can be applied at once, knowing
-- that none of them can make a transition. After the run's first step (record_one), `now` being fixed, advance()
-- has nothing left to do unless an open breaker's wait is already over. Then: an open breaker ignores stragglers;
-- frozen outcomes (an override in force) only fill the window; a half-open breaker moves at its success
-- threshold or its first failure; a closed one trips on a success only if the window is at minimum_calls with
-- its rate at the threshold: a success never raises the rate, so once the window holds minimum_calls at a rate
-- under the threshold no later success trips it, and before it holds minimum_calls none can. Failures on a
-- closed breaker go one at a time (each may trip it). 0: apply the next one with record_one.
local function run_safe(left, failure, frozen)
  if state == 'open' then
    if now < open_until then return left end
    return 0
  end
  if frozen then return left end
  if state == 'half_open' then
    if failure then return 0 end
    return math.max(0, math.min(left, cfg.hosucc - ho_ok - 1))
  end
  if failure then return 0 end
  if wtype == 'count' and cfg.minc > cfg.wsize then return left end
  local c, f = counts()
  if c < cfg.minc then return math.min(left, cfg.minc - c - 1) end
  if 100.0 * f / c < cfg.threshold then return left end
  return 0
end
-- What n record_one calls do when run_safe says none of them makes a transition.
local function apply_safe(n, failure, frozen)
  if state == 'open' then return end
  if state == 'half_open' and not frozen then
    ho_ok = ho_ok + n  -- successes only (see run_safe): toward closing, never into the window
    return
  end
  push_many(n, failure)
  if failure then consecutive = consecutive + n else consecutive = 0 end
end
local function record_run(k, pid, failure, ignored, ra, frozen, asked, cap)
  if k <= 1 or pid ~= '' or ignored or ra > 0 then
    local c, f
    for _ = 1, math.max(k, 1) do c, f = record_one(pid, failure, ignored, ra, frozen, asked, cap) end
    return c, f
  end
  local left = k
  local checked = false
  while left > 0 do
    if checked then
      local still = frozen or override_now() ~= ''
      local n = run_safe(left, failure, still)
      if n > 0 then apply_safe(n, failure, still); left = left - n end
    end
    if left > 0 then record_one(pid, failure, ignored, ra, frozen, asked, cap); left = left - 1 end
    checked = true
  end
  return counts()
end
"""

# The single-outcome form: bench/breakers.py runs it under redis-benchmark for comparison. ARGV[18]: the cap,
# ARGV[19]: the Retry-After asked for, in seconds (both optional).
RECORD = (
    PRELUDE
    + RECORD_STEP
    + r"""
local cap = tonumber(ARGV[18]) or 86400000
if not load(cap) then return {'rebuild'} end
trans = {}
local c, f = record_one(ARGV[13], ARGV[14] == '1', ARGV[15] == '1', tonumber(ARGV[16]), ARGV[17] == '1',
  tonumber(ARGV[19]) or 0, cap)
save()
local forced = override_now()
local shown = state
if forced ~= '' then shown = forced end
return {shown, 1, 0, '', '', c, f, consecutive, forced, redis.call('LLEN', P), now, unpack(trans)}
"""
)

# Returns now and the number of pending transitions, then per run: state, calls, failures, consecutive, the
# override in force, the number of transitions the run made, then ten values for each.
RECORD_MANY = (
    PRELUDE
    + RECORD_STEP
    + r"""
local n = tonumber(ARGV[13])
local cap = tonumber(ARGV[14 + 7 * n]) or 86400000
if not load(cap) then return {'rebuild'} end
local out = {}
for i = 0, n - 1 do
  local b = 14 + 7 * i
  trans = {}
  local c, f = record_run(tonumber(ARGV[b + 6]) or 1, ARGV[b], ARGV[b + 1] == '1', ARGV[b + 2] == '1',
    tonumber(ARGV[b + 3]), ARGV[b + 4] == '1', tonumber(ARGV[b + 5]) or 0, cap)
  out[#out + 1] = state; out[#out + 1] = c; out[#out + 1] = f; out[#out + 1] = consecutive
  out[#out + 1] = override_now(); out[#out + 1] = #trans / 10
  for _, v in ipairs(trans) do out[#out + 1] = v end
end
save()
local head = {now, redis.call('LLEN', P)}
for _, v in ipairs(out) do head[#head + 1] = v end
return head
"""
)

# Read-only: what a permit would see, without changing anything (for GET /breakers and the admin). ARGV as a
# permit's, with the cap in ARGV[13].
PEEK = (
    PRELUDE
    + r"""
local cap = tonumber(ARGV[13]) or 86400000
if not load(cap) then return {'rebuild'} end
local c, f = 0, 0
if wtype == cfg.wtype then
  if wtype == 'count' then
    local items = redis.call('LRANGE', WL, -cfg.wsize, -1)
    c = #items
    for _, v in ipairs(items) do if v == '1' then f = f + 1 end end
  else
    local oldest = math.floor(now / 1000) - cfg.wsize
    local h = redis.call('HGETALL', WH)
    for i = 1, #h, 2 do
      local sec = tonumber(string.sub(h[i], 1, -2))
      if sec ~= nil and sec > oldest then
        if string.sub(h[i], -1) == 'c' then c = c + (whole(h[i + 1]) or 0) else f = f + (whole(h[i + 1]) or 0) end
      end
    end
  end
end
return {state, opened_at, open_until, c, f, consecutive, redis.call('ZCOUNT', TR, now + 1, '+inf'), now,
  override_now(), ovr_until, ovr_reason, redis.call('LLEN', P)}
"""
)

# Write a state rebuilt from the database, unless another process has written a readable one meanwhile.
# ARGV[13]: the cap, then field, value pairs. The pending list is kept: its transitions still need their rows.
RESTORE = (
    PRELUDE
    + r"""
local cap = tonumber(ARGV[13]) or 86400000
if load(cap) then return 0 end
redis.call('DEL', S, WL, WH, TR)
redis.call('HSET', S, unpack(ARGV, 14))
return 1
"""
)

# The operator's override, where every permit looks. ARGV[13]: the cap, then mode, until (ms, 0: until
# cleared) and reason. {'rebuild'} when there is no readable state: the rebuilt one carries the override.
SET_OVERRIDE = (
    PRELUDE
    + r"""
local cap = tonumber(ARGV[13]) or 86400000
if not load(cap) then return {'rebuild'} end
redis.call('HSET', S, 'ovr', ARGV[14], 'ovr_until', ARGV[15], 'ovr_reason', ARGV[16])
return {'ok'}
"""
)

# A health check's verdict (logic.health_verdict does the same steps). ARGV[13]: the cap, then healthy ('1' or
# '0'), the check's name and the transition's reason. Replies state, the state found, the effect, calls,
# failures, consecutive, the override in force, the number of pending transitions, now, then the transitions.
VERDICT = (
    PRELUDE
    + r"""
local cap = tonumber(ARGV[13]) or 86400000
if not load(cap) then return {'rebuild'} end
local healthy, check, why = ARGV[14] == '1', ARGV[15], ARGV[16]
local before, forced, effect = state, override_now(), ''
if forced ~= '' then
  effect = 'override ' .. forced .. ' in force: verdict not applied'
else
  advance()
  if not healthy and state == 'open' then
    open_until = now + cap
    effect = 'already open'
  elseif not healthy then
    local prev, c, f = state, counts()
    local k = consecutive
    open(cfg.wait, now + cap, cap)
    by_check = check
    note(prev, 'open', why, c, f, k)
    effect = 'opened'
  elseif state == 'open' then
    local c, f = counts()
    state = 'half_open'; ho_ok = 0; redis.call('DEL', TR)
    by_check = check
    note('open', 'half_open', why, c, f, consecutive)
    effect = 'moved to half_open'
  else
    effect = 'unchanged: ' .. state
  end
end
local c, f = counts()
save()
return {state, before, effect, c, f, consecutive, forced, redis.call('LLEN', P), now, unpack(trans)}
"""
)

# Close the automatic state and empty its window (logic.close does the same steps); an override in force stays.
# ARGV[13]: the cap, ARGV[14]: the transition's reason. Replies as VERDICT does.
CLOSE = (
    PRELUDE
    + r"""
local cap = tonumber(ARGV[13]) or 86400000
if not load(cap) then return {'rebuild'} end
local before, forced = state, override_now()
local c, f = counts()
local k = consecutive
state = 'closed'; wait_ms = 0; ho_ok = 0; redis.call('DEL', TR); reset_window()
local effect = 'already closed: window emptied'
if before ~= 'closed' then
  note(before, 'closed', ARGV[14], c, f, k)
  effect = 'closed (was ' .. before .. ')'
end
if forced ~= '' then effect = effect .. '; override ' .. forced .. ' still in force' end
c, f = counts()
save()
return {state, before, effect, c, f, consecutive, forced, redis.call('LLEN', P), now, unpack(trans)}
"""
)

# Forget pending transitions whose rows are written (ARGV: their seqs), and any entry that cannot be read.
ACK = r"""
local drop = {}
for i = 1, #ARGV do drop[ARGV[i]] = true end
local gone = 0
for _, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local ok, entry = pcall(cjson.decode, item)
  if not ok or type(entry) ~= 'table' or drop[entry.seq] then
    redis.call('LREM', KEYS[1], 1, item); gone = gone + 1
  end
end
return gone
"""
