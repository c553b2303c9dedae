-- wrk script for every HTTP measurement of the bench.
--
--   wrk -t T -c C -d D -s bench/load.lua URL -- METHOD PATHS_FILE TOKENS_FILE BODY STOP_STATUS
--       STRIDE THEN
--
-- PATHS_FILE: one request path a line; requests go round the list.
-- TOKENS_FILE: "token<TAB>user_id" a line, or "-" for none. Each thread takes its own
--   slice of the lines (line i belongs to thread i mod T) and every request uses the
--   thread's next customer, so no two requests in flight act for the same customer and
--   a customer comes round again only after the whole slice was used.
-- BODY: the request body ("-" for none), or "@FILE": one body a line, requests go round
--   the list. STOP_STATUS: a thread stops at the first answer with this status ("-"
--   never); the flash sale stops at its first 409 (sold out). STRIDE: the thread count.
-- THEN: "confirm" makes every 201 answer to a hold (a body with "expires_at") queue the
--   hold's confirmation, POST /api/v1/holds/{id}/confirm by the hold's own customer;
--   a thread sends its queued confirmations, oldest first, before any new request.
--   "-" for none.
-- done() prints one line "BENCH_RESULT {json}" with latency percentiles and the count
-- of answers by status.

local threads = {}
local thread_count = 0

function setup(thread)
   thread:set("thread_index", thread_count)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

local function read_lines(name)
   local lines = {}
   if name == "-" then
      return lines
   end
   for line in io.lines(name) do
      if line ~= "" then
         table.insert(lines, line)
      end
   end
   return lines
end

function init(args)
   method = args[1]
   paths = read_lines(args[2])
   local all_tokens = read_lines(args[3])
   if args[4]:sub(1, 1) == "@" then
      bodies = read_lines(args[4]:sub(2))
   elseif args[4] ~= "-" then
      bodies = {args[4]}
   else
      bodies = {}
   end
   stop_status = tonumber(args[5])
   local stride = tonumber(args[6])
   confirming = args[7] == "confirm"
   tokens, users, token_of = {}, {}, {}
   for i, line in ipairs(all_tokens) do
      if (i - 1) % stride == thread_index then
         local token, user = line:match("^(%S+)\t(%S+)$")
         table.insert(tokens, token)
         table.insert(users, user)
         token_of[user] = token
      end
   end
   counter = 0
   statuses = {}
   -- Holds to confirm, a queue: confirms[first .. last].
   confirms, first, last = {}, 1, 0
end

function request()
   if first <= last then
      local hold = confirms[first]
      confirms[first] = nil
      first = first + 1
      return wrk.format("POST", "/api/v1/holds/" .. hold.id .. "/confirm", {
         ["Content-Type"] = "application/json",
         ["Authorization"] = "Bearer " .. hold.token,
      }, "{}")
   end
   counter = counter + 1
   local headers = {}
   local body = nil
   if #bodies > 0 then
      body = bodies[(counter - 1) % #bodies + 1]
      headers["Content-Type"] = "application/json"
   end
   if #tokens > 0 then
      local i = (counter - 1) % #tokens + 1
      headers["Authorization"] = "Bearer " .. tokens[i]
      -- Only the bare handlers read this; eventbook knows the user from the token.
      headers["X-User"] = users[i]
   end
   local path = paths[(counter - 1) % #paths + 1]
   return wrk.format(method, path, headers, body)
end

function response(status, headers, body)
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
   if status == stop_status then
      wrk.thread:stop()
   end
   if confirming and status == 201 and body:find('"expires_at"', 1, true) then
      local id = body:match('"id"%s*:%s*"([%x-]+)"')
      local user = body:match('"user_id"%s*:%s*"([%x-]+)"')
      last = last + 1
      confirms[last] = {id = id, token = token_of[user]}
   end
end

function done(summary, latency, requests)
   local counts = {}
   for _, thread in ipairs(threads) do
      local seen = thread:get("statuses") or {}
      for status, n in pairs(seen) do
         counts[status] = (counts[status] or 0) + n
      end
   end
   local parts = {}
   for status, n in pairs(counts) do
      table.insert(parts, string.format('"%s":%d', status, n))
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,' ..
      '"p99_us":%d,"max_us":%d,"mean_us":%.1f,"statuses":{%s},' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d}}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, latency.mean, table.concat(parts, ","),
      e.connect, e.read, e.write, e.timeout))
end
