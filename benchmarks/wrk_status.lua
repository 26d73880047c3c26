-- wrk script for the overload run: `wrk_bodies.lua` plus a count of answers by status.
--   wrk ... -s benchmarks/wrk_status.lua URL -- [BODY_DIR] [API_KEY]
-- Prints the same WRK_JSON line as wrk_bodies.lua, with "statuses": {"200": n, ...}.
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "wrk_bodies.lua")
local write_summary = done
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

statuses = {}

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  write_summary(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(total) do
    parts[#parts + 1] = string.format('"%d":%d', status, count)
  end
  io.write('WRK_STATUSES {' .. table.concat(parts, ",") .. '}\n')
end
