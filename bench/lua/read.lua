-- read-by-id: GET /Patient/{id} for a random seeded id.
-- args: <ids.txt>
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

setup, response, done = common.setup, common.response, common.done

local prepared = {}

function init(args)
  common.seed_random()
  for _, id in ipairs(common.read_lines(args[1])) do
    table.insert(prepared, wrk.format("GET", "/Patient/" .. id, common.READ_HEADERS))
  end
end

function request()
  return prepared[math.random(#prepared)]
end
