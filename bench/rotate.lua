-- wrk script for refresh rotation: every thread (one connection) is one chain that always
-- presents the cookie its previous refresh returned. Argument: a file of cookies, one per
-- line ("__Host-bff=…"), one per thread.
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

function init(args)
  local i = 0
  for line in io.lines(args[1]) do
    i = i + 1
    if i == id then cookie = line end
  end
  assert(cookie, "no cookie for chain " .. id)
end

function request()
  return wrk.format("POST", "/auth/refresh",
    { ["X-CSRF"] = "1", ["Cookie"] = cookie, ["Content-Length"] = "0" })
end

function response(status, headers, body)
  local set = headers["Set-Cookie"] or headers["set-cookie"]
  if set then cookie = set:match("^([^;]+)") end
end
