-- Baseline: GET /_bench/bare, a fixed tiny JSON body through the same app and middleware.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

setup, response, done = common.setup, common.response, common.done

local prepared

function init(args)
  prepared = wrk.format("GET", "/_bench/bare", common.READ_HEADERS)
end

function request()
  return prepared
end
