-- create: POST /Patient with a UK Core-shaped Patient (the same body each time).
-- args: <patient.json>
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

setup, response, done = common.setup, common.response, common.done

local prepared

function init(args)
  local body = common.read_file(args[1])
  prepared = wrk.format("POST", "/Patient", common.JSON_HEADERS, body)
end

function request()
  return prepared
end
