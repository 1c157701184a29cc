//! The TCP stream API of a [`Vm`]: network-filter contexts, their
//! connection and data callbacks, the data buffers the host holds for them,
//! and the end of a connection (ABI reference §6, §11.11, §11.16).
//!
//! A TCP context is a stream context whose buffers are `DOWNSTREAM_DATA`
//! (client to upstream) and `UPSTREAM_DATA` (upstream to client), read and
//! written with `proxy_get_buffer_bytes` / `proxy_set_buffer_bytes` under
//! the rules of HTTP bodies, during their data callback and for as long as
//! the connection is paused on it. It has no header maps and no HTTP
//! bodies; `proxy_send_local_response` is ignored for it, as in Envoy.

use vessel_abi::{BufferType, FilterStatus, PeerType};

use super::callbacks::{
    Callback, OnDelete, OnDone, OnDownstreamConnectionClose, OnDownstreamData, OnLog,
    OnNewConnection, OnUpstreamConnectionClose, OnUpstreamData,
};
use super::{Vm, len_i32};
use crate::error::VmError;
use crate::ids::ContextId;
use crate::properties::PropertyMap;
use crate::state::{HttpContext, Phase};

impl Vm {
    // ---- TCP streams --------------------------------------------------

    /// Creates a TCP stream (network filter) context with connection
    /// properties (`source.address`, `connection.id`, ...), running
    /// `proxy_on_context_create(id, root)`.
    pub fn create_tcp_context_with(
        &mut self,
        properties: PropertyMap,
    ) -> Result<ContextId, VmError> {
        self.create_stream_context(properties, true)
    }

    /// True if `ctx` is a TCP stream context of this VM.
    pub fn is_tcp_context(&self, ctx: ContextId) -> bool {
        self.http(ctx).is_ok_and(|h| h.tcp)
    }

    /// The TCP context `ctx`, or the error to give.
    fn tcp_mut(&mut self, ctx: ContextId) -> Result<&mut HttpContext, VmError> {
        let h = self.http_mut(ctx)?;
        if !h.tcp {
            return Err(VmError::WrongContextKind(ctx, "a TCP stream"));
        }
        Ok(h)
    }

    /// Runs `proxy_on_new_connection`. A module that does not export it
    /// continues.
    pub fn on_new_connection(&mut self, ctx: ContextId) -> Result<FilterStatus, VmError> {
        self.alive()?;
        self.tcp_mut(ctx)?;
        let raw = self.call::<OnNewConnection>(ctx, Phase::Callback, ctx.0 as i32)?;
        Ok(translate_network(raw))
    }

    /// Appends `data` to the `DOWNSTREAM_DATA` buffer (bytes from the
    /// client) and runs `proxy_on_downstream_data` with the whole buffered
    /// size. On [`FilterStatus::Continue`] take the buffer with
    /// [`Vm::take_body`] (`BufferType::DownstreamData`) and forward it; on
    /// a stop the host keeps it, readable and writable by the guest, until
    /// taken. Past [`Limits::max_body_bytes`](crate::Limits::max_body_bytes)
    /// nothing is appended and the result is [`VmError::StreamLimit`].
    pub fn on_downstream_data(
        &mut self,
        ctx: ContextId,
        data: &[u8],
        end_of_stream: bool,
    ) -> Result<FilterStatus, VmError> {
        self.data_call::<OnDownstreamData>(ctx, BufferType::DownstreamData, data, end_of_stream)
    }

    /// Runs `proxy_on_upstream_data` (bytes from the upstream) the same
    /// way, on the `UPSTREAM_DATA` buffer (see [`Vm::on_downstream_data`]).
    pub fn on_upstream_data(
        &mut self,
        ctx: ContextId,
        data: &[u8],
        end_of_stream: bool,
    ) -> Result<FilterStatus, VmError> {
        self.data_call::<OnUpstreamData>(ctx, BufferType::UpstreamData, data, end_of_stream)
    }

    /// Appends to a data buffer and runs `C(ctx, buffered_size, end)`.
    fn data_call<C>(
        &mut self,
        ctx: ContextId,
        ty: BufferType,
        data: &[u8],
        end_of_stream: bool,
    ) -> Result<FilterStatus, VmError>
    where
        C: Callback<Params = (i32, i32, i32), Results = i32>,
    {
        if let Err(failed) = self.alive() {
            // The bytes wait in the buffer, where a filter manager that
            // passes the failed filter by takes them back.
            if let Ok(h) = self.tcp_mut(ctx)
                && let Some(slot) = h.body_slot(ty)
            {
                slot.get_or_insert_with(Vec::new).extend_from_slice(data);
            }
            return Err(failed);
        }
        self.tcp_mut(ctx)?;
        self.append_body(ctx, ty, data)?;
        let size = self.body(ctx, ty).map_or(0, <[u8]>::len);
        let raw = self.call::<C>(
            ctx,
            Phase::Callback,
            (ctx.0 as i32, len_i32(size), i32::from(end_of_stream)),
        )?;
        Ok(translate_network(raw))
    }

    /// Runs `proxy_on_downstream_connection_close(ctx, peer)`.
    pub fn on_downstream_connection_close(
        &mut self,
        ctx: ContextId,
        peer: PeerType,
    ) -> Result<(), VmError> {
        self.alive()?;
        self.tcp_mut(ctx)?;
        self.call::<OnDownstreamConnectionClose>(
            ctx,
            Phase::Callback,
            (ctx.0 as i32, peer.as_u32() as i32),
        )?;
        Ok(())
    }

    /// Runs `proxy_on_upstream_connection_close(ctx, peer)`.
    pub fn on_upstream_connection_close(
        &mut self,
        ctx: ContextId,
        peer: PeerType,
    ) -> Result<(), VmError> {
        self.alive()?;
        self.tcp_mut(ctx)?;
        self.call::<OnUpstreamConnectionClose>(
            ctx,
            Phase::Callback,
            (ctx.0 as i32, peer.as_u32() as i32),
        )?;
        Ok(())
    }

    /// Ends a TCP stream in Envoy's order for a connection
    /// (`Context::onCloseTCP`): `on_done`, `on_log`, `on_delete`. The
    /// context is forgotten even if the VM failed (then no callback runs),
    /// so nothing leaks. A context that is not a TCP stream is left alone.
    pub fn finish_tcp_stream(&mut self, ctx: ContextId) -> Result<(), VmError> {
        match self.http(ctx) {
            Ok(h) if h.tcp => {}
            Ok(_) => return Err(VmError::WrongContextKind(ctx, "a TCP stream")),
            Err(e) => return Err(self.failed.clone().unwrap_or(e)),
        }
        let id = ctx.0 as i32;
        let result = self
            .call::<OnDone>(ctx, Phase::Callback, id)
            .and_then(|_| self.call::<OnLog>(ctx, Phase::Log, id))
            .and_then(|_| self.call::<OnDelete>(ctx, Phase::Callback, id))
            .map(drop);
        self.store.data_mut().remove_context(ctx);
        result
    }
}

/// Envoy's translation of a network callback's result
/// (`ContextBase::onDownstreamData`): 0 continues, anything else stops. A
/// callback the module does not export continues.
pub(crate) fn translate_network(raw: Option<i32>) -> FilterStatus {
    match raw {
        None | Some(0) => FilterStatus::Continue,
        Some(_) => FilterStatus::StopIteration,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_translation_matches_envoy() {
        assert_eq!(translate_network(None), FilterStatus::Continue);
        assert_eq!(translate_network(Some(0)), FilterStatus::Continue);
        assert_eq!(translate_network(Some(1)), FilterStatus::StopIteration);
        assert_eq!(translate_network(Some(-7)), FilterStatus::StopIteration);
    }
}
