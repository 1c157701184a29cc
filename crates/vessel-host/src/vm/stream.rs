//! The HTTP stream API of a [`Vm`]: stream contexts, their callbacks, the
//! maps and bodies the host holds for them, and the end of a stream.

use vessel_abi::{
    BufferType, FilterDataStatus, FilterHeadersStatus, FilterTrailersStatus, MapType,
};

use super::callbacks::{
    Callback, OnContextCreate, OnDelete, OnDone, OnLog, OnRequestBody, OnRequestHeaders,
    OnRequestHeadersV01, OnRequestTrailers, OnResponseBody, OnResponseHeaders,
    OnResponseHeadersV01, OnResponseTrailers,
};
use super::{Vm, len_i32};
use crate::error::VmError;
use crate::headers::HeaderMap;
use crate::ids::ContextId;
use crate::properties::{PropertyMap, PropertyValue};
use crate::state::{Context, HttpContext, Phase};
use crate::stream::Direction;

/// The headers a header callback gets: moved in, or copied into the
/// stream's own map.
enum HeadersIn<'a> {
    Owned(HeaderMap),
    Copied(&'a HeaderMap),
}

/// The chunk a body callback gets: lent (copied into the body buffer), or
/// given up.
enum BodyIn<'a> {
    Copied(&'a [u8]),
    Owned(Vec<u8>),
}

impl BodyIn<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Copied(d) => d,
            Self::Owned(d) => d,
        }
    }
}

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
        self.create_stream_context(properties, false)
    }

    /// Creates a stream context (`tcp`: a network filter's) and runs
    /// `proxy_on_context_create(id, root)`.
    pub(super) fn create_stream_context(
        &mut self,
        properties: PropertyMap,
        tcp: bool,
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
        let root = self.root;
        let st = self.store.data_mut();
        let mut ctx = st.new_http_context(root, properties);
        ctx.tcp = tcp;
        st.contexts.insert_new(id.0, Context::Http(ctx));
        if let Err(e) =
            self.call::<OnContextCreate>(id, Phase::Callback, (id.0 as i32, self.root.0 as i32))
        {
            // The embedder never learns the id: forget the context.
            self.store.data_mut().remove_context(id);
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

    /// [`Vm::set_stream_property`] at an encoded path, with the encoded value.
    pub(crate) fn set_stream_property_raw(
        &mut self,
        ctx: ContextId,
        path: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), VmError> {
        self.http_mut(ctx)?.properties.insert_raw(path, value);
        Ok(())
    }

    /// Adds a late property source to a stream's context
    /// ([`PropertyMap::add_late_source`](crate::PropertyMap::add_late_source)).
    pub(crate) fn add_stream_property_source(
        &mut self,
        ctx: ContextId,
        source: crate::properties::PropertySource,
    ) -> Result<(), VmError> {
        self.http_mut(ctx)?.properties.add_late_source(source);
        Ok(())
    }

    /// Runs a header callback: `V2(ctx, headers, end_of_stream)`, or
    /// `V1(ctx, headers)` for ABI 0.1.0.
    fn headers_call<V2, V1>(
        &mut self,
        ctx: ContextId,
        direction: Direction,
        map: HeadersIn<'_>,
        end_of_stream: bool,
    ) -> Result<FilterHeadersStatus, VmError>
    where
        V2: Callback<Params = (i32, i32, i32), Results = i32>,
        V1: Callback<Params = (i32, i32), Results = i32>,
    {
        self.alive()?;
        let slot = &mut self.http_mut(ctx)?.direction_mut(direction).headers;
        let n = match map {
            HeadersIn::Owned(map) => {
                let n = map.len();
                slot.open(map);
                n
            }
            HeadersIn::Copied(map) => {
                slot.open_copy(map);
                map.len()
            }
        };
        let n = len_i32(n);
        let id = ctx.0 as i32;
        let raw = if self.plugin.abi_version().is_v0_1() {
            self.call::<V1>(ctx, Phase::Callback, (id, n))?
        } else {
            self.call::<V2>(ctx, Phase::Callback, (id, n, i32::from(end_of_stream)))?
        };
        let (raw, stop_next) = self.result_and_stop(raw);
        // Envoy-Higress passes a 0.2.100 module's StopIteration through, as
        // Higress's Go plugins expect (they return it to read the body).
        let allow_stop = self.plugin.config().allow_on_headers_stop_iteration
            || self.plugin.abi_version().has_higress_extensions();
        let status = translate_headers(raw, stop_next, allow_stop);
        let h = self.http_mut(ctx)?;
        if status == FilterHeadersStatus::Continue {
            h.direction_mut(direction).headers.seal();
        }
        Ok(status)
    }

    /// A stream callback's raw result and whether the guest asked to stop
    /// (`proxy_send_local_response`) during it. A callback the module does
    /// not export answers 0 (Continue) and asked nothing.
    fn result_and_stop(&self, raw: Option<i32>) -> (u32, bool) {
        match raw {
            Some(raw) => (raw as u32, self.store.data().frame.stop_next_iteration),
            None => (0, false),
        }
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
        self.headers_call::<OnRequestHeaders, OnRequestHeadersV01>(
            ctx,
            Direction::Request,
            HeadersIn::Owned(headers),
            end_of_stream,
        )
    }

    /// [`Vm::on_request_headers`] with a copy of `headers`, made in the
    /// stream's own map. A VM keeps the maps of its last finished stream
    /// (up to 16 KiB each) for the next one, so an embedder that keeps its
    /// own map from request to request makes no allocation here. Read the
    /// result with [`Vm::headers`].
    pub fn on_request_headers_from(
        &mut self,
        ctx: ContextId,
        headers: &HeaderMap,
        end_of_stream: bool,
    ) -> Result<FilterHeadersStatus, VmError> {
        self.headers_call::<OnRequestHeaders, OnRequestHeadersV01>(
            ctx,
            Direction::Request,
            HeadersIn::Copied(headers),
            end_of_stream,
        )
    }

    /// Runs `proxy_on_response_headers` (see [`Vm::on_request_headers`]).
    pub fn on_response_headers(
        &mut self,
        ctx: ContextId,
        headers: HeaderMap,
        end_of_stream: bool,
    ) -> Result<FilterHeadersStatus, VmError> {
        self.headers_call::<OnResponseHeaders, OnResponseHeadersV01>(
            ctx,
            Direction::Response,
            HeadersIn::Owned(headers),
            end_of_stream,
        )
    }

    /// [`Vm::on_response_headers`] with a copy of `headers` (see
    /// [`Vm::on_request_headers_from`]).
    pub fn on_response_headers_from(
        &mut self,
        ctx: ContextId,
        headers: &HeaderMap,
        end_of_stream: bool,
    ) -> Result<FilterHeadersStatus, VmError> {
        self.headers_call::<OnResponseHeaders, OnResponseHeadersV01>(
            ctx,
            Direction::Response,
            HeadersIn::Copied(headers),
            end_of_stream,
        )
    }

    /// Runs a body callback `C(ctx, buffered_size, end_of_stream)` after
    /// appending `data` to the direction's buffer.
    fn body_call<C>(
        &mut self,
        ctx: ContextId,
        direction: Direction,
        data: BodyIn<'_>,
        end_of_stream: bool,
    ) -> Result<FilterDataStatus, VmError>
    where
        C: Callback<Params = (i32, i32, i32), Results = i32>,
    {
        if let Err(failed) = self.alive() {
            // On a failed VM the chunk waits in the stream's buffer (when
            // the stream has a context here), where a filter manager that
            // skips the failed filter takes it back
            // (`StreamConfig::skip_on_failure`).
            if let Ok(h) = self.http_mut(ctx) {
                append_chunk(&mut h.direction_mut(direction).body, data);
            }
            return Err(failed);
        }
        let ty = match direction {
            Direction::Request => BufferType::HttpRequestBody,
            Direction::Response => BufferType::HttpResponseBody,
        };
        self.check_body_room(ctx, ty, data.as_slice().len())?;
        let size = {
            let d = self.http_mut(ctx)?.direction_mut(direction);
            append_chunk(&mut d.body, data);
            let size = d.body.as_ref().map_or(0, Vec::len);
            d.may_add_trailers = end_of_stream && d.trailers.get().is_none();
            size
        };
        let raw = self.call::<C>(
            ctx,
            Phase::Callback,
            (ctx.0 as i32, len_i32(size), i32::from(end_of_stream)),
        )?;
        let (raw, stop_next) = self.result_and_stop(raw);
        let d = self.http_mut(ctx)?.direction_mut(direction);
        d.may_add_trailers = false;
        let status = translate_data(raw, stop_next);
        if status == FilterDataStatus::StopIterationNoBuffer {
            // Envoy keeps nothing for this chunk.
            d.body = Some(Vec::new());
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
        self.body_call::<OnRequestBody>(
            ctx,
            Direction::Request,
            BodyIn::Copied(data),
            end_of_stream,
        )
    }

    /// Runs `proxy_on_response_body` (see [`Vm::on_request_body`]).
    pub fn on_response_body(
        &mut self,
        ctx: ContextId,
        data: &[u8],
        end_of_stream: bool,
    ) -> Result<FilterDataStatus, VmError> {
        self.body_call::<OnResponseBody>(
            ctx,
            Direction::Response,
            BodyIn::Copied(data),
            end_of_stream,
        )
    }

    /// A body callback of `direction` with a chunk the caller gives up: when
    /// nothing is buffered (the common case), the chunk becomes the body
    /// buffer without a copy. For the filter manager.
    pub(crate) fn on_body_owned(
        &mut self,
        ctx: ContextId,
        direction: Direction,
        data: Vec<u8>,
        end_of_stream: bool,
    ) -> Result<FilterDataStatus, VmError> {
        let data = BodyIn::Owned(data);
        match direction {
            Direction::Request => {
                self.body_call::<OnRequestBody>(ctx, direction, data, end_of_stream)
            }
            Direction::Response => {
                self.body_call::<OnResponseBody>(ctx, direction, data, end_of_stream)
            }
        }
    }

    /// Runs a trailers callback `C(ctx, trailers)`.
    fn trailers_call<C>(
        &mut self,
        ctx: ContextId,
        direction: Direction,
        map: HeaderMap,
    ) -> Result<FilterTrailersStatus, VmError>
    where
        C: Callback<Params = (i32, i32), Results = i32>,
    {
        self.alive()?;
        let n = len_i32(map.len());
        self.http_mut(ctx)?
            .direction_mut(direction)
            .trailers
            .open(map);
        let raw = self.call::<C>(ctx, Phase::Callback, (ctx.0 as i32, n))?;
        let (raw, stop_next) = self.result_and_stop(raw);
        let status = translate_trailers(raw, stop_next);
        let h = self.http_mut(ctx)?;
        if status == FilterTrailersStatus::Continue {
            h.direction_mut(direction).trailers.seal();
        }
        Ok(status)
    }

    /// Runs `proxy_on_request_trailers`.
    pub fn on_request_trailers(
        &mut self,
        ctx: ContextId,
        trailers: HeaderMap,
    ) -> Result<FilterTrailersStatus, VmError> {
        self.trailers_call::<OnRequestTrailers>(ctx, Direction::Request, trailers)
    }

    /// Runs `proxy_on_response_trailers`.
    pub fn on_response_trailers(
        &mut self,
        ctx: ContextId,
        trailers: HeaderMap,
    ) -> Result<FilterTrailersStatus, VmError> {
        self.trailers_call::<OnResponseTrailers>(ctx, Direction::Response, trailers)
    }

    /// A stream map as the guest left it (maps 0–3), whether or not it is
    /// sealed. `None` if the stream never had it.
    pub fn headers(&self, ctx: ContextId, ty: MapType) -> Option<&HeaderMap> {
        self.http(ctx).ok()?.slot(ty)?.get()
    }

    /// Moves a stream map out of the host (it becomes unavailable to the guest).
    pub fn take_headers(&mut self, ctx: ContextId, ty: MapType) -> Option<HeaderMap> {
        HttpContext::map_part(ty)?;
        self.http_mut(ctx).ok()?.slot_mut(ty)?.take()
    }

    /// Provides a stream map without calling the guest (e.g. trailers that
    /// arrived while the stream was paused, or headers for `on_log`).
    pub fn set_headers(
        &mut self,
        ctx: ContextId,
        ty: MapType,
        map: HeaderMap,
    ) -> Result<(), VmError> {
        let not_a_stream_map = VmError::WrongContextKind(ctx, "a stream map");
        if HttpContext::map_part(ty).is_none() {
            return Err(not_a_stream_map);
        }
        let slot = self.http_mut(ctx)?.slot_mut(ty).ok_or(not_a_stream_map)?;
        slot.provide(map);
        Ok(())
    }

    /// Seals a stream map, as when the stream continues past it.
    pub fn seal(&mut self, ctx: ContextId, ty: MapType) -> Result<(), VmError> {
        if HttpContext::map_part(ty).is_some()
            && let Some(slot) = self.http_mut(ctx)?.slot_mut(ty)
        {
            slot.seal();
        }
        Ok(())
    }

    /// The buffered body of a stream (or, for a TCP stream, its
    /// `DOWNSTREAM_DATA` / `UPSTREAM_DATA` buffer).
    pub fn body(&self, ctx: ContextId, ty: BufferType) -> Option<&[u8]> {
        self.http(ctx).ok()?.body(ty).map(Vec::as_slice)
    }

    /// Takes the buffered body (to forward it on Continue); for a TCP
    /// stream, its `DOWNSTREAM_DATA` / `UPSTREAM_DATA` buffer.
    pub fn take_body(&mut self, ctx: ContextId, ty: BufferType) -> Option<Vec<u8>> {
        HttpContext::body_direction(ty)?;
        self.http_mut(ctx).ok()?.body_slot(ty)?.take()
    }

    /// Appends to a body buffer without calling the guest (data that arrives
    /// while the stream is paused on headers).
    pub fn append_body(
        &mut self,
        ctx: ContextId,
        ty: BufferType,
        data: &[u8],
    ) -> Result<(), VmError> {
        let not_a_body = VmError::WrongContextKind(ctx, "a body buffer");
        if HttpContext::body_direction(ty).is_none() {
            return Err(not_a_body);
        }
        self.check_body_room(ctx, ty, data.len())?;
        self.http_mut(ctx)?
            .body_slot(ty)
            .ok_or(not_a_body)?
            .get_or_insert_with(Vec::new)
            .extend_from_slice(data);
        Ok(())
    }

    /// `Err(StreamLimit)` if `extra` more bytes would take the body this
    /// filter holds for `ctx` past [`Limits::max_body_bytes`](crate::Limits::max_body_bytes).
    fn check_body_room(&self, ctx: ContextId, ty: BufferType, extra: usize) -> Result<(), VmError> {
        let held = self.http(ctx)?.body(ty).map_or(0, Vec::len);
        let limit = self.plugin.config().limits.max_body_bytes;
        crate::hostcalls::buffers::check_body_growth(ty, held, held.saturating_add(extra), limit)
            .map_err(|limit| VmError::StreamLimit {
                plugin: self.plugin.config().name.clone(),
                context: ctx,
                limit,
            })
    }

    /// True if the guest sent a local response on this stream.
    pub fn local_response_sent(&self, ctx: ContextId) -> bool {
        self.http(ctx).is_ok_and(|h| h.local_response_sent)
    }

    /// Runs `proxy_on_log`. Sealed maps are readable during it.
    pub fn on_log(&mut self, ctx: ContextId) -> Result<(), VmError> {
        self.alive()?;
        self.http(ctx)?;
        self.call::<OnLog>(ctx, Phase::Log, ctx.0 as i32)?;
        Ok(())
    }

    /// Runs `proxy_on_done`; returns its result (Envoy ignores it for streams).
    pub fn on_done(&mut self, ctx: ContextId) -> Result<bool, VmError> {
        Ok(self.call::<OnDone>(ctx, Phase::Callback, ctx.0 as i32)? != Some(0))
    }

    /// Runs `proxy_on_delete` and forgets the context.
    pub fn on_delete(&mut self, ctx: ContextId) -> Result<(), VmError> {
        let result = if self.failed.is_some() || self.store.data().contexts.contains_key(&ctx.0) {
            self.call::<OnDelete>(ctx, Phase::Callback, ctx.0 as i32)
                .map(drop)
        } else {
            Ok(())
        };
        self.store.data_mut().remove_context(ctx);
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
        // The context exists (checked once above), so call the three
        // callbacks directly; a failed callback skips the rest, as before.
        let id = ctx.0 as i32;
        let result = self
            .call::<OnLog>(ctx, Phase::Log, id)
            .and_then(|_| self.call::<OnDone>(ctx, Phase::Callback, id))
            .and_then(|_| self.call::<OnDelete>(ctx, Phase::Callback, id))
            .map(drop);
        self.store.data_mut().remove_context(ctx);
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

/// Appends a body chunk to a direction's buffer; with nothing buffered, an
/// owned chunk becomes the buffer, uncopied.
fn append_chunk(body: &mut Option<Vec<u8>>, data: BodyIn<'_>) {
    match data {
        BodyIn::Owned(data) if body.as_ref().is_none_or(Vec::is_empty) => *body = Some(data),
        data => body
            .get_or_insert_with(Vec::new)
            .extend_from_slice(data.as_slice()),
    }
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
