-- transition: PATCH /Task/{id} (JSON Patch, If-Match: W/"1") for the next Task of this
-- thread's own list, each Task once: a referral's Task moved on one step (requested ->
-- received), as a receiving service's EHR would.
-- args: <task ids prefix: a list per thread, prefix.1 ...> <patch.json> [<token file> | -]
--
-- A thread whose list runs out starts it again; the repeats fail If-Match (412), which the
-- benchmark counts as errors.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

setup, response, done = common.setup, common.response, common.done

local ids, body, headers
local position = 0

function init(args)
  ids = common.thread_lines(args[1])
  body = common.read_file(args[2])
  headers = common.with_token({
    ["Accept"] = "application/fhir+json",
    ["Content-Type"] = "application/json-patch+json",
    ["If-Match"] = 'W/"1"',
  }, args[3])
end

function request()
  position = position + 1
  if position > #ids then
    position = 1
  end
  return wrk.format("PATCH", "/Task/" .. ids[position], headers, body)
end
