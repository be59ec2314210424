-- create: POST /Patient with a UK Core-shaped Patient (the same body each time).
-- args: <patient.json> [<token file>, or "-" for none]
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

setup, response, done = common.setup, common.response, common.done

local prepared

function init(args)
  local body = common.read_file(args[1])
  local headers = common.with_token(common.JSON_HEADERS, args[2])
  prepared = wrk.format("POST", "/Patient", headers, body)
end

function request()
  return prepared
end
