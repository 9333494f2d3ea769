-- POST /orders with wrk (https://github.com/wg/wrk), counting answers by status code.
--
--   wrk -t2 -c32 -d10s --latency -s examples/wrk_post_order.lua http://127.0.0.1:8000
--
-- Every request is a new order with its own Idempotency-Key. Override the SKU and the
-- quantity with environment variables: WRK_SKU=TEE-M WRK_QUANTITY=2 wrk ...
--
-- wrk is closed-loop: each connection sends its next request only after the previous
-- answer, so when the service slows down wrk slows down with it and its latencies
-- leave out the requests it did not send (coordinated omission). wrk2 (`-R RATE`) and
-- `retail load` send at a fixed rate instead.

local sku = os.getenv("WRK_SKU") or "MUG-1"
local quantity = tonumber(os.getenv("WRK_QUANTITY") or "1")
local threads = {}

function setup(thread)
  thread:set("number", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  statuses = {}
  run = tostring(os.time())
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"customer_id":"wrk-%d","items":[{"sku":"%s","quantity":%d}]}', number, sku, quantity
  )
  local headers = {
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = string.format("wrk-%s-%d-%d", run, number, counter),
  }
  return wrk.format("POST", "/orders", headers, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

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
  io.write("answers by status:\n")
  for _, status in ipairs(codes) do
    local meaning = ({
      [201] = "placed and finished (Prefer: wait)",
      [202] = "accepted",
      [409] = "Idempotency-Key in use",
      [422] = "invalid order (out of stock?)",
      [503] = "shed: over capacity",
    })[status] or ""
    io.write(string.format("  %d  %8d  %s\n", status, totals[status], meaning))
  end
end
