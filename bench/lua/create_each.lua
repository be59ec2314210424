-- create-each: POST a body made from a template whose @@ID@@ marker is filled, request by
-- request, with the next id of this thread's own list, each id once: a referral needs a
-- new patient each time (a second open referral to the same service is refused).
-- args: <path> <ids prefix: a list per thread, prefix.1 ...> <template> [<token file> | -]
--
-- A thread whose list runs out starts it again; the server then refuses the repeats (422,
-- "already has an open referral"), which the benchmark counts as errors: give it more ids.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

setup, response, done = common.setup, common.response, common.done

local path, ids, before, after, headers
local position = 0

function init(args)
  path = args[1]
  ids = common.thread_lines(args[2])
  before, after = common.template(args[3])
  headers = common.with_token(common.JSON_HEADERS, args[4])
end

function request()
  position = position + 1
  if position > #ids then
    position = 1
  end
  return wrk.format("POST", path, headers, before .. ids[position] .. after)
end
