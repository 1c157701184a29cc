//! Higress's Redis calls (ABI 0.2.100, Higress's extension of 0.2.1):
//! `proxy_redis_init` and `proxy_redis_call`, answered through
//! `proxy_on_redis_call_response(root, token, status, response_size)` and
//! buffer 9 (`REDIS_CALL_RESPONSE`). They are callouts like HTTP calls (ABI
//! reference §4.5, §11.6): owned by the caller's **root** context, with
//! Envoy-Higress's token numbering (3, 7, 11, …), carried out by the
//! embedder from an [`Effect::RedisCall`].
//!
//! Semantics follow Envoy-Higress (`Context::redisInit`/`redisCall` and
//! `Redis::AsyncClientImpl`):
//!
//! * `proxy_redis_init(cluster, username, password, timeout_ms)`: OK; the
//!   cluster name may carry `?db=N&...` parameters (the part before `?`
//!   names the cluster). Unknown cluster or a `db` that is not a number →
//!   BAD_ARGUMENT; bad memory → INVALID_MEMORY_ACCESS. The options apply to
//!   later calls of this VM to that cluster. A timeout of 0 means Envoy's
//!   default, 1000 ms. `buffer_flush_timeout` and
//!   `max_buffer_size_before_flush` are accepted and ignored: vessel sends
//!   each command at once.
//! * `proxy_redis_call(cluster, query, token_ptr)`: OK with a token; unknown
//!   cluster or an empty query → BAD_ARGUMENT; too many callouts in flight
//!   → INTERNAL_FAILURE; bad memory → INVALID_MEMORY_ACCESS (checked before
//!   anything starts). The query is the guest's RESP bytes, sent as is.
//! * The answer: status 0 (`RedisStatus::Ok`) with the raw RESP reply
//!   readable as buffer 9 during the callback (a Redis error reply such as
//!   `-ERR` is a success too, as in Envoy); status 1 (`NetworkError`) with
//!   size 0 on connection failure or timeout, and `proxy_get_status` gives
//!   (BROKEN_CONNECTION, `"reset"`).
//! * Buffer 9 is readable only by 0.2.100 modules (empty outside the
//!   callback, as in Envoy-Higress); for other ABI versions it stays
//!   BAD_ARGUMENT, as in upstream Envoy. The imports themselves are linked
//!   for every version.

use std::collections::HashMap;
use std::time::Duration;

use vessel_abi::Status;
use wasmtime::Caller;

use super::callouts::next_token;
use super::{Registry, hostcall};
use crate::effects::{Effect, RedisCallRequest, RedisOptions};
use crate::ids::CalloutKind;
use crate::memory::{HostResult, range, read, return_u32, u, with_mem};
use crate::state::{Callout, HostState};

/// Per-VM Redis state: the token counter, the options of each initialized
/// cluster and the reply being delivered.
#[derive(Debug)]
pub(crate) struct RedisState {
    pub(crate) next_token: u32,
    pub(crate) options: HashMap<String, RedisOptions>,
    /// Buffer 9: the reply, during `proxy_on_redis_call_response` (empty
    /// otherwise, as Envoy's cleared `redis_call_response_`).
    pub(crate) response: Vec<u8>,
}

impl Default for RedisState {
    fn default() -> Self {
        Self {
            // Envoy: `next_redis_call_id_ = CalloutType::RedisCall` (3), += 4.
            next_token: 3,
            options: HashMap::new(),
            response: Vec::new(),
        }
    }
}

pub(crate) fn add_to_linker(reg: &mut Registry) -> wasmtime::Result<()> {
    hostcall!(reg, "env", "proxy_redis_init", redis_init,
        cluster: i32, cluster_len: i32, user: i32, user_len: i32,
        pass: i32, pass_len: i32, timeout: i32);
    hostcall!(reg, "env", "proxy_redis_call", redis_call,
        cluster: i32, cluster_len: i32, query: i32, query_len: i32, ret: i32);
    Ok(())
}

/// Splits `name?a=1&b=2` into the cluster name and its parameters.
fn split_cluster(raw: &str) -> (&str, &str) {
    raw.split_once('?').unwrap_or((raw, ""))
}

/// The `db` parameter, if any. `Err` if it is not a number.
fn database(params: &str) -> Result<u32, Status> {
    for pair in params.split('&') {
        if let Some(v) = pair.strip_prefix("db=") {
            return v.parse::<u32>().map_err(|_| Status::BadArgument);
        }
    }
    Ok(0)
}

#[allow(clippy::too_many_arguments)]
fn redis_init(
    caller: &mut Caller<'_, HostState>,
    cluster: i32,
    cluster_len: i32,
    user: i32,
    user_len: i32,
    pass: i32,
    pass_len: i32,
    timeout_ms: i32,
) -> HostResult {
    with_mem(caller, |mem, state| {
        let raw = String::from_utf8_lossy(read(mem, cluster, cluster_len)?).into_owned();
        let username = String::from_utf8_lossy(read(mem, user, user_len)?).into_owned();
        let password = String::from_utf8_lossy(read(mem, pass, pass_len)?).into_owned();
        let (name, params) = split_cluster(&raw);
        if !state.env.knows_cluster(name) {
            return Err(Status::BadArgument);
        }
        let timeout = match u(timeout_ms) {
            0 => RedisOptions::DEFAULT_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let options = RedisOptions {
            username,
            password,
            timeout,
            database: database(params)?,
        };
        state
            .callouts
            .redis
            .options
            .insert(name.to_owned(), options);
        Ok(())
    })??;
    Ok(())
}

fn redis_call(
    caller: &mut Caller<'_, HostState>,
    cluster: i32,
    cluster_len: i32,
    query: i32,
    query_len: i32,
    ret: i32,
) -> HostResult {
    let token = with_mem(caller, |mem, state| {
        range(mem.len(), ret, 4)?;
        let raw = String::from_utf8_lossy(read(mem, cluster, cluster_len)?).into_owned();
        let query = read(mem, query, query_len)?.to_vec();
        let (name, _) = split_cluster(&raw);
        if !state.env.knows_cluster(name) || query.is_empty() {
            return Err(Status::BadArgument);
        }
        if state.callouts.in_flight.len() >= state.plugin.config.limits.max_callouts_in_flight {
            return Err(Status::InternalFailure);
        }
        let options = state
            .callouts
            .redis
            .options
            .get(name)
            .cloned()
            .unwrap_or_default();
        let root = state.target_root();
        let token = next_token(state, CalloutKind::Redis);
        state.callouts.in_flight.insert(
            token.0,
            Callout {
                root,
                kind: CalloutKind::Redis,
                local_closed: false,
                remote_closed: false,
            },
        );
        state.effects.push(Effect::RedisCall {
            root,
            token,
            call: RedisCallRequest {
                cluster: name.to_owned(),
                query,
                options,
            },
        });
        Ok(token)
    })??;
    return_u32(caller, ret, token.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_parameters_are_split_and_db_parsed() {
        let (name, params) =
            split_cluster("outbound|6379||redis.static?db=2&buffer_flush_timeout=3");
        assert_eq!(name, "outbound|6379||redis.static");
        assert_eq!(database(params), Ok(2));
        assert_eq!(split_cluster("plain"), ("plain", ""));
        assert_eq!(database(""), Ok(0));
        assert_eq!(database("max_buffer_size_before_flush=1024"), Ok(0));
        assert_eq!(database("db=x"), Err(Status::BadArgument));
    }
}
