-- wrk script for scripts/bench-decide.sh.
--
-- POSTs the JSON body in the file named by $BENCH_BODY, with $BENCH_AUTH
-- (if set) as the Authorization header. Every answer that is not a 200
-- whose body holds $BENCH_EXPECT (the expected decision) is counted as bad;
-- at the end one machine-readable line is printed:
--   BENCH requests=N duration_us=N p50_us=X p99_us=X bad=N errors=N

local function read(path)
  local f = assert(io.open(path, "rb"), "cannot read " .. tostring(path))
  local s = f:read("*a")
  f:close()
  return s
end

wrk.method = "POST"
wrk.body = read(os.getenv("BENCH_BODY"))
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = auth
end
local expect = assert(os.getenv("BENCH_EXPECT"), "BENCH_EXPECT is not set")

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

bad = 0
function response(status, headers, body)
  if status ~= 200 or not string.find(body, expect, 1, true) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do
    b = b + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%.1f p99_us=%.1f bad=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    b, e.connect + e.read + e.write + e.status + e.timeout))
end
