-- update: PUT /Patient/{id} for a random seeded id; the body carries that id.
-- args: <ids.txt> <patient-update.tmpl>
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

setup, response, done = common.setup, common.response, common.done

local prepared = {}

function init(args)
  common.seed_random()
  local before, after = common.template(args[2])
  for _, id in ipairs(common.read_lines(args[1])) do
    local body = before .. id .. after
    table.insert(prepared, wrk.format("PUT", "/Patient/" .. id, common.JSON_HEADERS, body))
  end
end

function request()
  return prepared[math.random(#prepared)]
end
