-- wrk script for the benchmarks: POST /orders, count answers by status, report JSON.
--
--   wrk -t2 -c64 -d10s -s bench/post_orders.lua http://127.0.0.1:8000
--
-- Environment: BENCH_SKU (MUG-1), BENCH_KEYS=1 sends a fresh Idempotency-Key with
-- every request, BENCH_IDS_DIR=dir makes each thread write the Location of every 202
-- to dir/ids-N.txt (so a benchmark can check that each accepted order is stored).
-- `done` prints one line `BENCH-JSON {...}` with counts and latency percentiles.

local sku = os.getenv("BENCH_SKU") or "MUG-1"
local keys = os.getenv("BENCH_KEYS") == "1"
local ids_dir = os.getenv("BENCH_IDS_DIR")
local threads = {}

function setup(thread)
  thread:set("number", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  statuses = {}
  run = tostring(os.time())
  body = string.format('{"customer_id":"bench-%d","items":[{"sku":"%s","quantity":1}]}', number, sku)
  if ids_dir then
    ids = io.open(string.format("%s/ids-%d.txt", ids_dir, number), "w")
  end
  if not keys then
    fixed = wrk.format("POST", "/orders", {["Content-Type"] = "application/json"}, body)
  end
end

function request()
  if fixed then
    return fixed
  end
  counter = counter + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = string.format("bench-%s-%d-%d", run, number, counter),
  }
  return wrk.format("POST", "/orders", headers, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if ids and status == 202 then
    local location = headers["Location"] or headers["location"]
    if location then
      ids:write(location, "\n")
    end
  end
end

function done(summary, latency, requests)
  local totals = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      totals[status] = (totals[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(totals) do
    table.insert(parts, string.format('"%d":%d', status, n))
  end
  io.write(string.format(
    'BENCH-JSON {"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    table.concat(parts, ",")
  ))
end
