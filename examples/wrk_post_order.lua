-- POST /orders with wrk (https://github.com/wg/wrk), counting answers by status code.
--
--   wrk -t2 -c32 -d10s --latency -s examples/wrk_post_order.lua http://127.0.0.1:8000
--
-- Every request is a new order with its own Idempotency-Key. Override the SKU and the
-- quantity with environment variables: WRK_SKU=TEE-M WRK_QUANTITY=2 wrk ...
-- WRK_SKU=MUG-1,TEE-M,... takes the SKUs in turn, one per request, as a shop's orders
-- spread over its catalogue.
--
-- wrk is closed-loop: each connection sends its next request only after the previous
-- answer, so when the service slows down wrk slows down with it and its latencies
-- leave out the requests it did not send (coordinated omission). wrk2 (`-R RATE`) and
-- `retail load` send at a fixed rate instead.
--
-- For the benchmarks (bench/wrk.py): WRK_KEYS=0 sends one request over and over, with no
-- Idempotency-Key; WRK_IDS_DIR=dir makes each thread write the Location of every 202 to
-- dir/ids-N.txt; WRK_REPORT=json ends with one line `BENCH-JSON {...}` (counts and
-- latency percentiles) instead of the table.

local skus = {}
for sku in string.gmatch(os.getenv("WRK_SKU") or "MUG-1", "[^,]+") do
  table.insert(skus, sku)
end
local quantity = tonumber(os.getenv("WRK_QUANTITY") or "1")
local keys = os.getenv("WRK_KEYS") ~= "0"
local ids_dir = os.getenv("WRK_IDS_DIR")
local json_report = os.getenv("WRK_REPORT") == "json"
local threads = {}

function setup(thread)
  thread:set("number", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  statuses = {}
  run = tostring(os.time())
  bodies = {}
  for i, sku in ipairs(skus) do
    bodies[i] = string.format(
      '{"customer_id":"wrk-%d","items":[{"sku":"%s","quantity":%d}]}', number, sku, quantity
    )
  end
  if ids_dir then
    ids = io.open(string.format("%s/ids-%d.txt", ids_dir, number), "w")
  end
  if not keys then
    fixed = {}
    for i, body in ipairs(bodies) do
      fixed[i] = wrk.format("POST", "/orders", {["Content-Type"] = "application/json"}, body)
    end
  end
end

function request()
  counter = counter + 1
  local turn = counter % #skus + 1
  if fixed then
    return fixed[turn]
  end
  local body = bodies[turn]
  local headers = {
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = string.format("wrk-%s-%d-%d", run, number, counter),
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

local meanings = {
  [201] = "placed and finished (Prefer: wait)",
  [202] = "accepted",
  [409] = "Idempotency-Key in use",
  [422] = "invalid order (out of stock?)",
  [503] = "shed: over capacity",
}

function done(summary, latency, requests)
  local totals = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      totals[status] = (totals[status] or 0) + n
    end
  end
  local codes = {}
  for status in pairs(totals) do
    table.insert(codes, status)
  end
  table.sort(codes)
  if json_report then
    local parts = {}
    for _, status in ipairs(codes) do
      table.insert(parts, string.format('"%d":%d', status, totals[status]))
    end
    io.write(string.format(
      'BENCH-JSON {"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"statuses":{%s}}\n',
      summary.requests, summary.duration,
      summary.errors.connect, summary.errors.read, summary.errors.write,
      summary.errors.status, summary.errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      table.concat(parts, ",")
    ))
    return
  end
  io.write("answers by status:\n")
  for _, status in ipairs(codes) do
    io.write(string.format("  %d  %8d  %s\n", status, totals[status], meanings[status] or ""))
  end
end
