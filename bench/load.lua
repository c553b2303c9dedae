-- wrk script for every HTTP measurement of the bench.
--
--   wrk -t T -c C -d D -s bench/load.lua URL -- METHOD PATHS_FILE TOKENS_FILE BODY STOP_STATUS
--
-- PATHS_FILE: one request path a line; requests go round the list.
-- TOKENS_FILE: "token<TAB>user_id" a line, or "-" for none. Each thread takes its own
--   slice of the lines (line i belongs to thread i mod T) and every request uses the
--   thread's next customer, so no two requests in flight act for the same customer and
--   a customer comes round again only after the whole slice was used.
-- BODY: the request body ("-" for none). STOP_STATUS: a thread stops at the first answer
--   with this status ("-" never); the flash sale stops at its first 409 (sold out).
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
   body = args[4] ~= "-" and args[4] or nil
   stop_status = tonumber(args[5])
   local stride = tonumber(args[6])
   tokens, users = {}, {}
   for i, line in ipairs(all_tokens) do
      if (i - 1) % stride == thread_index then
         local token, user = line:match("^(%S+)\t(%S+)$")
         table.insert(tokens, token)
         table.insert(users, user)
      end
   end
   counter = 0
   statuses = {}
end

function request()
   counter = counter + 1
   local headers = {}
   if body then
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
