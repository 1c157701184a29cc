// as_headers: a header filter with a local reply, written with the
// AssemblyScript SDK (@solo-io/proxy-runtime 0.1.8, ABI 0.2.0). Root id
// "as_headers" (the SDK picks the root context factory by plugin_root_id).
// Contract: spec-tests/guests/README.md, section "AssemblyScript guests".
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues,
  stream_context, send_local_response, GrpcStatusValues, HeaderPair, Headers,
  log, LogLevelValues,
} from "@solo-io/proxy-runtime";

class HeadersRoot extends RootContext {
  onConfigure(configuration_size: u32): bool {
    const ok = super.onConfigure(configuration_size);
    log(LogLevelValues.info, "as_headers: configured " + this.getConfiguration());
    return ok;
  }

  createContext(context_id: u32): Context {
    return new HeadersFilter(context_id, this);
  }
}

class HeadersFilter extends Context {
  constructor(context_id: u32, root_context: HeadersRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const path = stream_context.headers.request.get(":path");
    log(LogLevelValues.info, "as_headers: request headers=" + num_headers.toString()
      + " end_of_stream=" + (end_of_stream ? "true" : "false") + " path=" + path);
    if (path.startsWith("/deny")) {
      log(LogLevelValues.info, "as_headers: denying " + path);
      const headers: Headers = [];
      headers.push(new HeaderPair(String.UTF8.encode("x-as-local"), String.UTF8.encode("deny")));
      send_local_response(403, "as_headers_denied", String.UTF8.encode("denied by as_headers\n"),
        headers, GrpcStatusValues.InvalidCode);
      return FilterHeadersStatusValues.StopIteration;
    }
    // proxy_get_header_map_pairs: the SDK parses the serialized map itself.
    const pairs = stream_context.headers.request.get_headers();
    for (let i = 0; i < pairs.length; i++) {
      log(LogLevelValues.info, "as_headers: request pair " + String.UTF8.decode(pairs[i].key)
        + "=" + String.UTF8.decode(pairs[i].value));
    }
    stream_context.headers.request.add("x-as-config", this.root_context.getConfiguration());
    stream_context.headers.request.replace("x-as-replace", "replaced");
    stream_context.headers.request.remove("x-as-remove");
    const missing = stream_context.headers.request.get("x-as-missing");
    log(LogLevelValues.info, "as_headers: x-as-missing=[" + missing + "]");
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const status = stream_context.headers.response.get(":status");
    log(LogLevelValues.info, "as_headers: response status=" + status);
    // (The SDK's set_headers does not compile with asc 0.17, so no
    // proxy_set_header_map_pairs here.)
    const pairs = stream_context.headers.response.get_headers();
    let cookies = 0;
    for (let i = 0; i < pairs.length; i++) {
      if (String.UTF8.decode(pairs[i].key) == "set-cookie") cookies++;
    }
    log(LogLevelValues.info, "as_headers: response set-cookie count=" + cookies.toString());
    stream_context.headers.response.add("x-as-response", "status-" + status);
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => { return new HeadersRoot(context_id); }, "as_headers");
