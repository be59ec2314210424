-- CRUD mix: each virtual user creates a Patient, reads it, updates it, deletes it, and
-- starts again, like the crud scenario of the open FHIR server performance benchmark.
-- args: <patient.json> <patient-update.tmpl>
--
-- wrk gives Lua no connection identity, so the users live in a per-thread queue: a response
-- queues that user's next step, and the next request() takes a step from the queue, or
-- starts a new user (a create) when the queue is empty. A response is handled before its
-- connection asks for its next request, so at most one step is in flight per connection and
-- the number of users equals the number of connections. A failed step ends its user.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

setup, done = common.setup, common.done

local create_request
local before, after
local queue = {}
local head, tail = 1, 0

local function push(step, id)
  tail = tail + 1
  queue[tail] = { step, id }
end

local function pop()
  if head > tail then
    return nil
  end
  local item = queue[head]
  queue[head] = nil
  head = head + 1
  return item
end

function init(args)
  local body = common.read_file(args[1])
  create_request = wrk.format("POST", "/Patient", common.JSON_HEADERS, body)
  before, after = common.template(args[2])
end

function request()
  local item = pop()
  if item == nil then
    return create_request
  end
  local step, id = item[1], item[2]
  local path = "/Patient/" .. id
  if step == "read" then
    return wrk.format("GET", path, common.READ_HEADERS)
  elseif step == "update" then
    return wrk.format("PUT", path, common.JSON_HEADERS, before .. id .. after)
  end
  return wrk.format("DELETE", path, common.READ_HEADERS)
end

-- Which step a response answers: create (201 + Location), read (200, version 1), update
-- (200, version 2) or delete (204). The server's ETag says the version.
local function header(headers, name)
  return headers[name] or headers[name:lower()]
end

local function resource_id(headers, body)
  local location = header(headers, "Location")
  if location then
    local id = location:match("/Patient/([^/]+)/_history/")
    if id then
      return id
    end
  end
  return body and body:match('"id"%s*:%s*"([^"]+)"')
end

function response(status, headers, body)
  if not common.count(status, body) then
    return
  end
  if status == 204 then
    return -- deleted: this user is done; the next request starts a new one
  end
  local id = resource_id(headers, body)
  if not id then
    return
  end
  if status == 201 then
    push("read", id)
    return
  end
  local etag = header(headers, "ETag") or ""
  if etag:find('"1"', 1, true) then
    push("update", id)
  else
    push("delete", id)
  end
end
