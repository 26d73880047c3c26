-- wrk script for mnist-serve benchmarks.
--   wrk ... -s benchmarks/wrk_bodies.lua URL -- [BODY_DIR] [API_KEY]
-- BODY_DIR holds meta.txt ("<count> <content-type>", "-" for none, then optional
-- "Name: value" header lines) and 0.body .. <count-1>.body:
-- each thread POSTs them in turn (a varied pool, not one cached body). Without
-- BODY_DIR it sends plain GETs. At the end it prints one JSON line with the
-- latency percentiles wrk's own report lacks (p95, p99.9).
local prepared = {}
local next_index = 0

function init(args)
  local dir, key = args[1], args[2]
  local headers = {}
  if key and key ~= "" then headers["X-API-Key"] = key end
  if not dir or dir == "" then
    prepared[1] = wrk.format("GET", nil, headers, nil)
    return
  end
  local meta = io.open(dir .. "/meta.txt", "r")
  local count, content_type = meta:read("*n"), nil
  content_type = meta:read("*l"):gsub("^%s+", "")
  if content_type ~= "-" then headers["Content-Type"] = content_type end
  for line in meta:lines() do
    local name, value = line:match("^([%w-]+):%s*(.-)%s*$")
    if name then headers[name] = value end
  end
  meta:close()
  for i = 0, count - 1 do
    local file = io.open(dir .. "/" .. i .. ".body", "rb")
    local body = file:read("*a")
    file:close()
    prepared[#prepared + 1] = wrk.format("POST", nil, headers, body)
  end
  next_index = math.random(#prepared) - 1
end

function request()
  next_index = next_index % #prepared + 1
  return prepared[next_index]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nWRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"min":%d,"max":%d,' ..
    '"p50":%d,"p90":%d,"p95":%d,"p99":%d,"p99.9":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.min, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency:percentile(99.9)))
end
