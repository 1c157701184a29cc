//! The HTTP stream API of a [`Vm`]: stream contexts, their callbacks, the
//! maps and bodies the host holds for them, and the end of a stream.

use vessel_abi::{
    BufferType, FilterDataStatus, FilterHeadersStatus, FilterTrailersStatus, MapType,
};

use super::callbacks::HeadersFn;
use super::{Vm, len_i32};
use crate::error::VmError;
use crate::headers::HeaderMap;
use crate::ids::ContextId;
use crate::properties::{PropertyMap, PropertyValue};
use crate::state::{Context, HttpContext, Phase, body_index, map_index};

impl Vm {
    // ---- HTTP streams -------------------------------------------------

    /// Creates an HTTP stream context (`proxy_on_context_create(id, root)`).
    pub fn create_http_context(&mut self) -> Result<ContextId, VmError> {
        self.create_http_context_with(PropertyMap::new())
    }

    /// Creates an HTTP stream context with stream properties
    /// (`source.address`, `request.protocol`, ...).
    pub fn create_http_context_with(
        &mut self,
        properties: PropertyMap,
    ) -> Result<ContextId, VmError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let max = self.plugin.config().limits.max_contexts;
        if self.store.data().contexts.len() >= max {
            return Err(VmError::TooManyContexts {
                plugin: self.plugin.config().name.clone(),
                max,
            });
        }
        let id = self.store.data_mut().alloc_context_id();
        let ctx = HttpContext {
            root: self.root,
            properties,
            ..HttpContext::default()
        };
        self.store
            .data_mut()
            .contexts
            .insert(id.0, Context::Http(Box::new(ctx)));
        if let Some(f) = self.funcs.context_create.clone()
            && let Err(e) = self.call(
                "proxy_on_context_create",
                f,
                id,
                Phase::Callback,
                (id.0 as i32, self.root.0 as i32),
            )
        {
            // The embedder never learns the id: forget the context.
            self.store.data_mut().contexts.remove(&id.0);
            return Err(e);
        }
        Ok(id)
    }

    /// Sets a property on a stream (dotted path, e.g. `source.address`).
    pub fn set_stream_property(
        &mut self,
        ctx: ContextId,
        dotted: &str,
        value: impl Into<PropertyValue>,
    ) -> Result<(), VmError> {
        self.http_mut(ctx)?.properties.insert_dotted(dotted, value);
        Ok(())
    }

    fn headers_call(
        &mut self,
        ctx: ContextId,
        ty: MapType,
        map: HeaderMap,
        end_of_stream: bool,
    ) -> Result<FilterHeadersStatus, VmError> {
        self.alive()?;
        let i = map_index(ty).unwrap_or(0);
        {
            let h = self.http_mut(ctx)?;
            h.maps[i] = map;
            h.present[i] = true;
            h.sealed[i] = false;
        }
        let (name, f) = if i == 0 {
            (
                "proxy_on_request_headers",
                self.funcs.request_headers.clone(),
            )
        } else {
            (
                "proxy_on_response_headers",
                self.funcs.response_headers.clone(),
            )
        };
        let n = len_i32(self.http(ctx)?.maps[i].len());
        let raw = match f {
            None => 0,
            Some(HeadersFn::V1(f)) => {
                self.call(name, f, ctx, Phase::Callback, (ctx.0 as i32, n))?
            }
            Some(HeadersFn::V2(f)) => self.call(
                name,
                f,
                ctx,
                Phase::Callback,
                (ctx.0 as i32, n, i32::from(end_of_stream)),
            )?,
        };
        let allow_stop = self.plugin.config().allow_on_headers_stop_iteration;
        let stop_next = std::mem::take(&mut self.store.data_mut().stop_next_iteration);
        let h = self.http_mut(ctx)?;
        let status = translate_headers(raw as u32, stop_next, allow_stop);
        if status == FilterHeadersStatus::Continue {
            h.sealed[i] = true;
        }
        Ok(status)
    }

    /// Runs `proxy_on_request_headers`. The host keeps the map; read it with
    /// [`Vm::headers`]. The result is translated as Envoy translates it
    /// (ABI reference §11.1): Continue seals the map (later map hostcalls get
    /// BAD_ARGUMENT, as in Envoy).
    pub fn on_request_headers(
        &mut self,
        ctx: ContextId,
        headers: HeaderMap,
        end_of_stream: bool,
    ) -> Result<FilterHeadersStatus, VmError> {
        self.headers_call(ctx, MapType::HttpRequestHeaders, headers, end_of_stream)
    }

    /// Runs `proxy_on_response_headers` (see [`Vm::on_request_headers`]).
    pub fn on_response_headers(
        &mut self,
        ctx: ContextId,
        headers: HeaderMap,
        end_of_stream: bool,
    ) -> Result<FilterHeadersStatus, VmError> {
        self.headers_call(ctx, MapType::HttpResponseHeaders, headers, end_of_stream)
    }

    fn body_call(
        &mut self,
        ctx: ContextId,
        ty: BufferType,
        data: &[u8],
        end_of_stream: bool,
    ) -> Result<FilterDataStatus, VmError> {
        self.alive()?;
        let i = body_index(ty).unwrap_or(0);
        let size = {
            let h = self.http_mut(ctx)?;
            let buf = h.bodies[i].get_or_insert_with(Vec::new);
            buf.extend_from_slice(data);
            let size = buf.len();
            h.may_add_trailers[i] = end_of_stream && !h.present[1 + 2 * i];
            size
        };
        let (name, f) = if i == 0 {
            ("proxy_on_request_body", self.funcs.request_body.clone())
        } else {
            ("proxy_on_response_body", self.funcs.response_body.clone())
        };
        let raw = match f {
            None => 0,
            Some(f) => self.call(
                name,
                f,
                ctx,
                Phase::Callback,
                (ctx.0 as i32, len_i32(size), i32::from(end_of_stream)),
            )?,
        };
        let stop_next = std::mem::take(&mut self.store.data_mut().stop_next_iteration);
        let h = self.http_mut(ctx)?;
        h.may_add_trailers[i] = false;
        let status = translate_data(raw as u32, stop_next);
        if status == FilterDataStatus::StopIterationNoBuffer {
            // Envoy keeps nothing for this chunk.
            h.bodies[i] = Some(Vec::new());
        }
        Ok(status)
    }

    /// Appends `data` to the request body buffer and runs
    /// `proxy_on_request_body` with the whole buffered size (ABI reference
    /// §11.2). On Continue, take the buffer with [`Vm::take_body`] and
    /// forward it; on a stop the host keeps buffering.
    pub fn on_request_body(
        &mut self,
        ctx: ContextId,
        data: &[u8],
        end_of_stream: bool,
    ) -> Result<FilterDataStatus, VmError> {
        self.body_call(ctx, BufferType::HttpRequestBody, data, end_of_stream)
    }

    /// Runs `proxy_on_response_body` (see [`Vm::on_request_body`]).
    pub fn on_response_body(
        &mut self,
        ctx: ContextId,
        data: &[u8],
        end_of_stream: bool,
    ) -> Result<FilterDataStatus, VmError> {
        self.body_call(ctx, BufferType::HttpResponseBody, data, end_of_stream)
    }

    fn trailers_call(
        &mut self,
        ctx: ContextId,
        ty: MapType,
        map: HeaderMap,
    ) -> Result<FilterTrailersStatus, VmError> {
        self.alive()?;
        let i = map_index(ty).unwrap_or(1);
        {
            let h = self.http_mut(ctx)?;
            h.maps[i] = map;
            h.present[i] = true;
            h.sealed[i] = false;
        }
        let (name, f) = if i == 1 {
            (
                "proxy_on_request_trailers",
                self.funcs.request_trailers.clone(),
            )
        } else {
            (
                "proxy_on_response_trailers",
                self.funcs.response_trailers.clone(),
            )
        };
        let n = len_i32(self.http(ctx)?.maps[i].len());
        let raw = match f {
            None => 0,
            Some(f) => self.call(name, f, ctx, Phase::Callback, (ctx.0 as i32, n))?,
        };
        let stop_next = std::mem::take(&mut self.store.data_mut().stop_next_iteration);
        let h = self.http_mut(ctx)?;
        let status = translate_trailers(raw as u32, stop_next);
        if status == FilterTrailersStatus::Continue {
            h.sealed[i] = true;
        }
        Ok(status)
    }

    /// Runs `proxy_on_request_trailers`.
    pub fn on_request_trailers(
        &mut self,
        ctx: ContextId,
        trailers: HeaderMap,
    ) -> Result<FilterTrailersStatus, VmError> {
        self.trailers_call(ctx, MapType::HttpRequestTrailers, trailers)
    }

    /// Runs `proxy_on_response_trailers`.
    pub fn on_response_trailers(
        &mut self,
        ctx: ContextId,
        trailers: HeaderMap,
    ) -> Result<FilterTrailersStatus, VmError> {
        self.trailers_call(ctx, MapType::HttpResponseTrailers, trailers)
    }

    /// A stream map as the guest left it (maps 0–3), whether or not it is
    /// sealed. `None` if the stream never had it.
    pub fn headers(&self, ctx: ContextId, ty: MapType) -> Option<&HeaderMap> {
        let h = self.http(ctx).ok()?;
        let i = map_index(ty)?;
        h.present[i].then(|| &h.maps[i])
    }

    /// Moves a stream map out of the host (it becomes unavailable to the guest).
    pub fn take_headers(&mut self, ctx: ContextId, ty: MapType) -> Option<HeaderMap> {
        let i = map_index(ty)?;
        let h = self.http_mut(ctx).ok()?;
        if !h.present[i] {
            return None;
        }
        h.present[i] = false;
        Some(std::mem::take(&mut h.maps[i]))
    }

    /// Provides a stream map without calling the guest (e.g. trailers that
    /// arrived while the stream was paused, or headers for `on_log`).
    pub fn set_headers(
        &mut self,
        ctx: ContextId,
        ty: MapType,
        map: HeaderMap,
    ) -> Result<(), VmError> {
        let i = map_index(ty).ok_or(VmError::WrongContextKind(ctx, "a stream map"))?;
        let h = self.http_mut(ctx)?;
        h.maps[i] = map;
        h.present[i] = true;
        Ok(())
    }

    /// Seals a direction's maps, as when the stream continues past them.
    pub fn seal(&mut self, ctx: ContextId, ty: MapType) -> Result<(), VmError> {
        if let Some(i) = map_index(ty) {
            self.http_mut(ctx)?.sealed[i] = true;
        }
        Ok(())
    }

    /// The buffered body of a stream.
    pub fn body(&self, ctx: ContextId, ty: BufferType) -> Option<&[u8]> {
        self.http(ctx).ok()?.body(ty).map(Vec::as_slice)
    }

    /// Takes the buffered body (to forward it on Continue).
    pub fn take_body(&mut self, ctx: ContextId, ty: BufferType) -> Option<Vec<u8>> {
        let i = body_index(ty)?;
        self.http_mut(ctx).ok()?.bodies[i].take()
    }

    /// Appends to a body buffer without calling the guest (data that arrives
    /// while the stream is paused on headers).
    pub fn append_body(
        &mut self,
        ctx: ContextId,
        ty: BufferType,
        data: &[u8],
    ) -> Result<(), VmError> {
        let i = body_index(ty).ok_or(VmError::WrongContextKind(ctx, "a body buffer"))?;
        self.http_mut(ctx)?.bodies[i]
            .get_or_insert_with(Vec::new)
            .extend_from_slice(data);
        Ok(())
    }

    /// True if the guest sent a local response on this stream.
    pub fn local_response_sent(&self, ctx: ContextId) -> bool {
        self.http(ctx).is_ok_and(|h| h.local_response_sent)
    }

    /// Runs `proxy_on_log`. Sealed maps are readable during it.
    pub fn on_log(&mut self, ctx: ContextId) -> Result<(), VmError> {
        self.alive()?;
        self.http(ctx)?;
        if let Some(f) = self.funcs.log.clone() {
            self.call("proxy_on_log", f, ctx, Phase::Log, ctx.0 as i32)?;
        }
        Ok(())
    }

    /// Runs `proxy_on_done`; returns its result (Envoy ignores it for streams).
    pub fn on_done(&mut self, ctx: ContextId) -> Result<bool, VmError> {
        self.alive()?;
        match self.funcs.done.clone() {
            Some(f) => Ok(self.call("proxy_on_done", f, ctx, Phase::Callback, ctx.0 as i32)? != 0),
            None => Ok(true),
        }
    }

    /// Runs `proxy_on_delete` and forgets the context.
    pub fn on_delete(&mut self, ctx: ContextId) -> Result<(), VmError> {
        let result = match self.funcs.delete.clone() {
            _ if self.failed.is_some() => self.alive(),
            Some(f) if self.store.data().contexts.contains_key(&ctx.0) => {
                self.call("proxy_on_delete", f, ctx, Phase::Callback, ctx.0 as i32)
            }
            _ => Ok(()),
        };
        self.store.data_mut().contexts.remove(&ctx.0);
        result
    }

    /// Ends a stream in Envoy's order: `on_log`, `on_done`, `on_delete`
    /// (ABI reference §11.11). The context is forgotten even if the VM
    /// failed, so nothing leaks. A context that is not an HTTP stream (the
    /// root context, say) is left alone.
    pub fn finish_http_stream(&mut self, ctx: ContextId) -> Result<(), VmError> {
        if let Err(e) = self.http(ctx) {
            return Err(self.failed.clone().unwrap_or(e));
        }
        let result = self
            .on_log(ctx)
            .and_then(|()| self.on_done(ctx).map(|_| ()))
            .and_then(|()| self.on_delete(ctx));
        self.store.data_mut().contexts.remove(&ctx.0);
        result
    }
}

/// Envoy's translation of a header callback's result (ABI reference §11.1).
pub fn translate_headers(
    raw: u32,
    stop_next: bool,
    allow_stop_iteration: bool,
) -> FilterHeadersStatus {
    if stop_next || raw > 4 {
        return FilterHeadersStatus::StopAllIterationAndWatermark;
    }
    match raw {
        1 if allow_stop_iteration => FilterHeadersStatus::StopIteration,
        1 => FilterHeadersStatus::StopAllIterationAndWatermark,
        3 => FilterHeadersStatus::StopAllIterationAndBuffer,
        4 => FilterHeadersStatus::StopAllIterationAndWatermark,
        // 2 (ContinueAndEndStream) reaches Envoy's default case: Continue.
        _ => FilterHeadersStatus::Continue,
    }
}

/// Envoy's translation of a body callback's result.
pub fn translate_data(raw: u32, stop_next: bool) -> FilterDataStatus {
    if stop_next || raw > 3 {
        return FilterDataStatus::StopIterationNoBuffer;
    }
    FilterDataStatus::try_from(raw).unwrap_or(FilterDataStatus::StopIterationNoBuffer)
}

/// Envoy's translation of a trailers callback's result.
pub fn translate_trailers(raw: u32, stop_next: bool) -> FilterTrailersStatus {
    if stop_next || raw > 1 {
        return FilterTrailersStatus::StopIteration;
    }
    FilterTrailersStatus::try_from(raw).unwrap_or(FilterTrailersStatus::StopIteration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_translation_matches_envoy() {
        use FilterHeadersStatus::*;
        assert_eq!(translate_headers(0, false, false), Continue);
        assert_eq!(
            translate_headers(1, false, false),
            StopAllIterationAndWatermark
        );
        assert_eq!(translate_headers(1, false, true), StopIteration);
        assert_eq!(translate_headers(2, false, false), Continue);
        assert_eq!(
            translate_headers(3, false, false),
            StopAllIterationAndBuffer
        );
        assert_eq!(
            translate_headers(4, false, false),
            StopAllIterationAndWatermark
        );
        assert_eq!(
            translate_headers(99, false, false),
            StopAllIterationAndWatermark
        );
        assert_eq!(
            translate_headers(0, true, false),
            StopAllIterationAndWatermark
        );
    }

    #[test]
    fn data_and_trailer_translation_matches_envoy() {
        assert_eq!(translate_data(0, false), FilterDataStatus::Continue);
        assert_eq!(
            translate_data(1, false),
            FilterDataStatus::StopIterationAndBuffer
        );
        assert_eq!(
            translate_data(4, false),
            FilterDataStatus::StopIterationNoBuffer
        );
        assert_eq!(
            translate_data(0, true),
            FilterDataStatus::StopIterationNoBuffer
        );
        assert_eq!(translate_trailers(0, false), FilterTrailersStatus::Continue);
        assert_eq!(
            translate_trailers(2, false),
            FilterTrailersStatus::StopIteration
        );
        assert_eq!(
            translate_trailers(0, true),
            FilterTrailersStatus::StopIteration
        );
    }
}
