-- read-by-id: GET /Patient/{id} for a random seeded id.
-- args: <ids.txt> [<token file>, or "-" for none]
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

setup, response, done = common.setup, common.response, common.done

local prepared = {}

function init(args)
  common.seed_random()
  local headers = common.with_token(common.READ_HEADERS, args[2])
  for _, id in ipairs(common.read_lines(args[1])) do
    table.insert(prepared, wrk.format("GET", "/Patient/" .. id, headers))
  end
end

function request()
  return prepared[math.random(#prepared)]
end
