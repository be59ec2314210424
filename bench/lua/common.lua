-- Shared by the Waymark wrk scripts: status counting, file loading and the JSON summary.
--
-- wrk runs one Lua state per thread plus a main one. Each thread counts the statuses it sees
-- in globals (response() below); done() runs in the main state, pulls every thread's counts
-- with thread:get() and prints one line, "WAYMARK_BENCH {json}", that bench/crud.py parses.

local M = {}

M.JSON_HEADERS = {
  ["Accept"] = "application/fhir+json",
  ["Content-Type"] = "application/fhir+json",
}
M.READ_HEADERS = { ["Accept"] = "application/fhir+json" }

-- Per-thread state, read back by done(). Globals, so that thread:get() can see them.
statuses = {}
non2xx = 0
first_error = ""

local threads = {}

function M.setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

function M.seed_random()
  math.randomseed(os.time() * 1000 + (thread_number or 0) * 7919)
  for _ = 1, 10 do
    math.random()
  end
end

function M.read_file(path)
  local file = assert(io.open(path, "rb"), "cannot open " .. tostring(path))
  local text = file:read("*a")
  file:close()
  return text
end

function M.read_lines(path)
  local lines = {}
  for line in io.lines(path) do
    if line ~= "" then
      table.insert(lines, line)
    end
  end
  assert(#lines > 0, "no lines in " .. tostring(path))
  return lines
end

-- Split a body template at its "@@ID@@" marker once, so each request is one concatenation.
function M.template(path)
  local text = M.read_file(path)
  local first, last = text:find("@@ID@@", 1, true)
  assert(first, "no @@ID@@ marker in " .. tostring(path))
  return text:sub(1, first - 1), text:sub(last + 1)
end

-- A copy of headers with "Authorization: Bearer <token>" when path names a file holding an
-- access token; none when path is nil, empty or "-" (a server with WAYMARK_AUTH=off).
function M.with_token(headers, path)
  local copy = {}
  for name, value in pairs(headers) do
    copy[name] = value
  end
  if path and path ~= "" and path ~= "-" then
    local token = M.read_file(path):gsub("%s+$", "")
    if token ~= "" then
      copy["Authorization"] = "Bearer " .. token
    end
  end
  return copy
end

-- The lines of this thread's own list, <prefix>.<thread number>: lists whose items are used
-- once each (a new patient per referral, a Task per transition) are split per thread.
function M.thread_lines(prefix)
  return M.read_lines(prefix .. "." .. tostring(thread_number or 1))
end

-- Count a response; true when it is a 2xx.
function M.count(status, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first_error == "" then
      first_error = key .. " " .. string.sub(body or "", 1, 300)
    end
    return false
  end
  return true
end

function M.response(status, headers, body)
  M.count(status, body)
end

local function json_string(text)
  local escaped = text:gsub('[%c"\\]', function(char)
    if char == '"' then
      return '\\"'
    elseif char == "\\" then
      return "\\\\"
    end
    return string.format("\\u%04x", string.byte(char))
  end)
  return '"' .. escaped .. '"'
end

function M.done(summary, latency, requests)
  local all_statuses = {}
  local total_non2xx = 0
  local error_sample = ""
  for _, thread in ipairs(threads) do
    for code, count in pairs(thread:get("statuses") or {}) do
      all_statuses[code] = (all_statuses[code] or 0) + count
    end
    total_non2xx = total_non2xx + (thread:get("non2xx") or 0)
    local sample = thread:get("first_error") or ""
    if error_sample == "" then
      error_sample = sample
    end
  end
  local status_parts = {}
  for code, count in pairs(all_statuses) do
    table.insert(status_parts, string.format('"%s":%d', code, count))
  end
  table.sort(status_parts)
  local errors = summary.errors
  local seconds = summary.duration / 1e6
  local parts = {
    string.format('"requests":%d', summary.requests),
    string.format('"duration_s":%.6f', seconds),
    string.format('"rps":%.3f', summary.requests / seconds),
    string.format('"ok_rps":%.3f', (summary.requests - total_non2xx) / seconds),
    string.format('"p50_ms":%.3f', latency:percentile(50) / 1000),
    string.format('"p90_ms":%.3f', latency:percentile(90) / 1000),
    string.format('"p99_ms":%.3f', latency:percentile(99) / 1000),
    string.format('"max_ms":%.3f', latency.max / 1000),
    string.format('"mean_ms":%.3f', latency.mean / 1000),
    string.format('"non2xx":%d', total_non2xx),
    string.format('"statuses":{%s}', table.concat(status_parts, ",")),
    string.format(
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}',
      errors.connect,
      errors.read,
      errors.write,
      errors.status,
      errors.timeout
    ),
    string.format('"first_error":%s', json_string(error_sample)),
  }
  io.write("WAYMARK_BENCH {" .. table.concat(parts, ",") .. "}\n")
end

return M
