//! The foreign functions Envoy-Higress offers that Higress's Go plugins
//! (built on `higress-group/wasm-go`) call through
//! `proxy_call_foreign_function` (ABI reference §4.1, §9). They answer only
//! when the embedder registered no function of the same name.
//!
//! * `get_log_level`: OK with the plugin's log level as a u32
//!   little-endian (trace 0 … critical 5), which wasm-go's logger compares
//!   against before formatting a line.
//! * `set_global_max_requests_per_io_cycle(u64 LE)`: OK, no effect — a
//!   tuning knob of Envoy's event loop that vessel does not have; any
//!   argument that is not 8 bytes → BAD_ARGUMENT.
//!
//! Every other name stays NOT_FOUND; wasm-go treats that as "not available"
//! (for `get_log_level` it then logs at every level and lets the host
//! filter).

use vessel_abi::Status;

use crate::state::HostState;

/// The built-in answer to foreign function `name`, if it is one.
pub(crate) fn foreign(
    state: &HostState,
    name: &str,
    args: &[u8],
) -> Option<Result<Vec<u8>, Status>> {
    match name {
        "get_log_level" => Some(Ok(state
            .plugin
            .config
            .log_level
            .as_u32()
            .to_le_bytes()
            .to_vec())),
        "set_global_max_requests_per_io_cycle" => Some(if args.len() == 8 {
            Ok(Vec::new())
        } else {
            Err(Status::BadArgument)
        }),
        _ => None,
    }
}
