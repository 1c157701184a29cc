// as_http_call: authorization through an HTTP callout, written with the
// AssemblyScript SDK (@solo-io/proxy-runtime 0.1.8, ABI 0.2.0). Root id
// "as_http_call"; the plugin configuration is the auth cluster's name.
// The request pauses until the answer: 200 -> request header x-as-user
// (from the answer's x-auth-user) and continue; anything else -> local 403.
// Contract: spec-tests/guests/README.md, section "AssemblyScript guests".
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues,
  stream_context, send_local_response, continue_request, GrpcStatusValues,
  WasmResultValues, HeaderPair, Headers, log, LogLevelValues,
} from "@solo-io/proxy-runtime";
import { get_buffer_bytes, BufferTypeValues } from "@solo-io/proxy-runtime/runtime";

function pair(key: string, value: string): HeaderPair {
  return new HeaderPair(String.UTF8.encode(key), String.UTF8.encode(value));
}

class AuthRoot extends RootContext {
  onConfigure(configuration_size: u32): bool {
    const ok = super.onConfigure(configuration_size);
    log(LogLevelValues.info, "as_http_call: configured cluster=" + this.getConfiguration());
    return ok;
  }

  createContext(context_id: u32): Context {
    return new AuthFilter(context_id, this);
  }
}

// Called by the SDK with the stream's context as effective context.
function onAuthResponse(origin: Context, headers: u32, body_size: usize, trailers: u32): void {
  const status = stream_context.headers.http_callback.get(":status");
  const body = String.UTF8.decode(get_buffer_bytes(BufferTypeValues.HttpCallResponseBody, 0, body_size as u32));
  log(LogLevelValues.info, "as_http_call: response context=" + origin.context_id.toString()
    + " headers=" + headers.toString() + " body_size=" + body_size.toString()
    + " status=" + status + " body=" + body);
  if (status == "200") {
    const user = stream_context.headers.http_callback.get("x-auth-user");
    log(LogLevelValues.info, "as_http_call: allowed user=" + user);
    stream_context.headers.request.add("x-as-user", user);
    continue_request();
  } else {
    log(LogLevelValues.info, "as_http_call: denied status=" + status);
    const reply: Headers = [];
    reply.push(pair("x-as-auth-status", status.length > 0 ? status : "none"));
    send_local_response(403, "as_http_call_denied", String.UTF8.encode("forbidden by as_http_call\n"),
      reply, GrpcStatusValues.InvalidCode);
  }
}

class AuthFilter extends Context {
  constructor(context_id: u32, root_context: AuthRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const cluster = this.root_context.getConfiguration();
    const token = stream_context.headers.request.get("x-token");
    const path = stream_context.headers.request.get(":path");
    const headers: Headers = [];
    headers.push(pair(":method", "GET"));
    headers.push(pair(":path", "/auth"));
    headers.push(pair(":authority", cluster));
    headers.push(pair("x-token", token));
    headers.push(pair("x-original-path", path));
    const result = this.root_context.httpCall(cluster, headers, new ArrayBuffer(0), [], 1000, this, onAuthResponse);
    if (result != WasmResultValues.Ok) {
      log(LogLevelValues.info, "as_http_call: dispatch to " + cluster + " failed: " + result.toString());
      send_local_response(503, "as_http_call_dispatch_failed", String.UTF8.encode("auth unavailable\n"),
        [], GrpcStatusValues.InvalidCode);
      return FilterHeadersStatusValues.StopIteration;
    }
    log(LogLevelValues.info, "as_http_call: checking path=" + path + " token=" + token);
    return FilterHeadersStatusValues.StopIteration;
  }
}

registerRootContext((context_id: u32) => { return new AuthRoot(context_id); }, "as_http_call");
