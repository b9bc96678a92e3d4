-- POST one fixed body, read from a file, on every request; report figures as JSON at the end.
--
-- wrk -t1 -c16 -d8s --latency -s benchmarks/wrk/post_body.lua URL -- BODY_FILE CONTENT_TYPE [HEADER_LENGTH]
--
--   BODY_FILE      the request body, sent as is (binary safe)
--   CONTENT_TYPE   its Content-Type
--   HEADER_LENGTH  when not "-", sent as Inference-Header-Content-Length (V2 binary tensor data)
--
-- Every response's status is checked: any other than 200 is counted as "non_200" (wrk itself
-- only counts statuses above 399). done() prints one line "WRK_JSON {...}" with requests,
-- duration, errors and latency percentiles in microseconds (wrk's own text rounds them);
-- serving_core.py reads it.

non_200 = 0

function init(args)
   local path, content_type, header_length = args[1], args[2], args[3]
   if path == nil or content_type == nil then
      error("usage: wrk ... -s post_body.lua URL -- BODY_FILE CONTENT_TYPE [HEADER_LENGTH]")
   end
   local f = assert(io.open(path, "rb"))
   local body = f:read("*a")
   f:close()
   wrk.method = "POST"
   wrk.body = body
   wrk.headers["Content-Type"] = content_type
   if header_length ~= nil and header_length ~= "-" then
      wrk.headers["Inference-Header-Content-Length"] = header_length
   end
end

function response(status, headers, body)
   if status ~= 200 then
      non_200 = non_200 + 1
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   local p = {}
   for _, q in ipairs({50, 75, 90, 99, 99.9}) do
      p[#p + 1] = string.format('"%s": %d', tostring(q), latency:percentile(q))
   end
   io.write(string.format(
      'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, "non_200": %d}, ' ..
      '"latency_us": {"min": %d, "mean": %.3f, "max": %d, "stdev": %.3f, ' ..
      '"percentiles": {%s}}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout, non_200,
      latency.min, latency.mean, latency.max, latency.stdev, table.concat(p, ", ")))
end
