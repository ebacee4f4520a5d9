-- One benchmark target for wrk, configured from the environment by bench/loadgen.py:
--   BENCH_METHOD  GET or POST
--   BENCH_BODY    path of a file holding the request body (optional)
--   BENCH_KEY     an API key, sent as "Authorization: Bearer <key>" (optional)
-- The request is static (no request() function), so wrk formats it once per thread and the load generator
-- spends no Lua time per request: it shares the server's two cores, and every cycle it uses is not the server's.

wrk.method = os.getenv("BENCH_METHOD") or "GET"
wrk.headers["Accept"] = "application/json"

local body_path = os.getenv("BENCH_BODY")
if body_path and body_path ~= "" then
  local file = assert(io.open(body_path, "rb"))
  wrk.body = file:read("*a")
  file:close()
  wrk.headers["Content-Type"] = "application/json"
end

local key = os.getenv("BENCH_KEY")
if key and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end

-- One machine-readable line for bench/loadgen.py; latencies are in microseconds. errors.status counts the
-- responses with a status of 400 or more, which must be zero in a valid run.
function done(summary, latency, requests)
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"mean_us":%.1f,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"status_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, summary.bytes, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout))
end
