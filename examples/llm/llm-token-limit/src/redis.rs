//! The Redis budget (cargo feature `redis`, built as
//! `llm_token_limit_redis.wasm`): the same budget kept in Redis, so it
//! holds across gateway instances, through Higress's Redis hostcalls
//! (ABI 0.2.100).
//!
//! The Rust SDK 0.2 has no Redis API, so this module declares the imports
//! (`proxy_redis_init`, `proxy_redis_call`, and `proxy_get_buffer_bytes`
//! for buffer 9, `REDIS_CALL_RESPONSE`, which the SDK's `BufferType` lacks)
//! and exports `proxy_on_redis_call_response` and the
//! `proxy_abi_version_0_2_100` marker itself. The host reads the first
//! known marker of the export section; this module's marker comes before
//! the SDK's `proxy_abi_version_0_2_1` (the linker keeps the crate's own
//! exports first), so vessel takes the module as 0.2.100, the only version
//! for which buffer 9 is readable. Stock Envoy has no `proxy_redis_*`
//! imports and refuses this build: use `llm_token_limit.wasm` there.
//!
//! Calls are owned by the root context; a thread-local map keeps, per
//! token, what the answer is for (a stream's budget check, or a charge).
//! The answer comes back through `proxy_on_redis_call_response`, which
//! makes the stream current again (`proxy_set_effective_context`) and
//! answers 429 or resumes it.

// The hostcall imports and exports of the 0.2.100 ABI need `unsafe`.
#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ptr::null_mut;
use std::rc::Rc;

use log::{info, warn};
use proxy_wasm::hostcalls;

use llm_common::resp::{command, number};

use crate::{RedisConfig, reject};

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_redis_init(
        cluster: *const u8,
        cluster_len: usize,
        user: *const u8,
        user_len: usize,
        pass: *const u8,
        pass_len: usize,
        timeout_ms: u32,
    ) -> u32;
    fn proxy_redis_call(
        cluster: *const u8,
        cluster_len: usize,
        query: *const u8,
        query_len: usize,
        token: *mut u32,
    ) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
}

/// The ABI marker of Higress's 0.2.100 (0.2.1 plus the Redis calls).
///
/// Never called. Its body is not empty, so the linker cannot fold it into
/// the SDK's (empty) `proxy_abi_version_0_2_1`: exports are written in the
/// order of their functions, this crate's before the SDK's, so this marker
/// comes first and is the one the host reads.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_100() {
    std::hint::black_box(100u32);
}

/// Buffer type 9: the Redis reply, during `proxy_on_redis_call_response`.
const REDIS_CALL_RESPONSE: u32 = 9;
/// The longest reply read (a GET of a number, or an integer).
const MAX_REPLY: usize = 64;

/// A stream's flags the answer callback shares with its HTTP context.
#[derive(Debug, Default)]
pub(crate) struct StreamFlags {
    /// The request waits for the budget check.
    pub(crate) waiting: Cell<bool>,
    /// A Redis failure was logged for this stream.
    pub(crate) warned: Cell<bool>,
}

impl StreamFlags {
    /// Logs `message` at warn level, once per stream.
    pub(crate) fn warn_once(&self, message: &str) {
        if !self.warned.replace(true) {
            warn!("{message}");
        }
    }
}

/// What a call's answer is for.
enum Pending {
    /// The budget check of the stream `context`.
    Check {
        context: u32,
        who: String,
        budget: u64,
        retry: u64,
        flags: Rc<StreamFlags>,
    },
    /// The charge of `tokens` to `who` (fire and forget: only logged).
    Charge {
        who: String,
        tokens: u64,
        budget: u64,
        flags: Rc<StreamFlags>,
    },
}

thread_local! {
    static PENDING: RefCell<HashMap<u32, Pending>> = RefCell::new(HashMap::new());
}

/// `proxy_redis_init` for the configured cluster (from `on_configure`).
/// `Err` with the host's status (1: unknown cluster) on failure.
pub(crate) fn init(config: &RedisConfig) -> Result<(), u32> {
    let cluster = config.cluster.as_bytes();
    // SAFETY: the pointers and lengths describe live slices; the user name
    // and password are empty.
    let status = unsafe {
        proxy_redis_init(
            cluster.as_ptr(),
            cluster.len(),
            std::ptr::null(),
            0,
            std::ptr::null(),
            0,
            config.timeout_ms,
        )
    };
    if status == 0 { Ok(()) } else { Err(status) }
}

/// Sends one command, remembering what its answer is for.
fn call(cluster: &str, query: &[u8], pending: Pending) -> Result<(), u32> {
    let mut token = 0u32;
    // SAFETY: the pointers and lengths describe live slices, and `token` is
    // a live u32 the host writes.
    let status = unsafe {
        proxy_redis_call(
            cluster.as_ptr(),
            cluster.len(),
            query.as_ptr(),
            query.len(),
            &raw mut token,
        )
    };
    if status != 0 {
        return Err(status);
    }
    PENDING.with(|m| m.borrow_mut().insert(token, pending));
    Ok(())
}

/// Starts the budget check of stream `context`: `GET key`. `Ok` if the
/// stream must wait for the answer.
pub(crate) fn check(
    config: &RedisConfig,
    context: u32,
    key: &str,
    who: &str,
    budget: u64,
    retry: u64,
    flags: &Rc<StreamFlags>,
) -> Result<(), u32> {
    let query = command(&[b"GET", key.as_bytes()]);
    let pending = Pending::Check {
        context,
        who: who.to_owned(),
        budget,
        retry,
        flags: Rc::clone(flags),
    };
    call(&config.cluster, &query, pending)
}

/// The charge script: `INCRBY key n` and `EXPIRE key ttl` in one command
/// (one reply: the new total).
const CHARGE: &[u8] = b"local n = redis.call('INCRBY', KEYS[1], ARGV[1]) \
redis.call('EXPIRE', KEYS[1], ARGV[2]) return n";

/// Adds `tokens` to `key` and keeps it for `ttl` seconds (fire and forget;
/// the answer is only logged).
pub(crate) fn charge(
    config: &RedisConfig,
    key: &str,
    ttl: u64,
    who: &str,
    tokens: u64,
    budget: u64,
    flags: &Rc<StreamFlags>,
) {
    let (n, ttl) = (tokens.to_string(), ttl.to_string());
    let query = command(&[
        b"EVAL",
        CHARGE,
        b"1",
        key.as_bytes(),
        n.as_bytes(),
        ttl.as_bytes(),
    ]);
    let pending = Pending::Charge {
        who: who.to_owned(),
        tokens,
        budget,
        flags: Rc::clone(flags),
    };
    if let Err(status) = call(&config.cluster, &query, pending) {
        flags.warn_once(&format!(
            "llm-token-limit: redis call failed (status {status}); {tokens} tokens of {who} not counted"
        ));
    }
}

/// The reply in buffer 9, at most [`MAX_REPLY`] bytes.
fn reply(size: usize) -> Option<Vec<u8>> {
    let mut data: *mut u8 = null_mut();
    let mut len: usize = 0;
    // SAFETY: the host writes a pointer it allocated through the SDK's
    // `proxy_on_memory_allocate` (a boxed slice of `len` bytes) and its
    // length; ownership passes to us, as in the SDK's `get_buffer`.
    unsafe {
        let status = proxy_get_buffer_bytes(
            REDIS_CALL_RESPONSE,
            0,
            size.min(MAX_REPLY),
            &raw mut data,
            &raw mut len,
        );
        if status != 0 || data.is_null() {
            return None;
        }
        Some(Vec::from_raw_parts(data, len, len))
    }
}

/// The answer to a Redis call (status 0: OK with the reply in buffer 9;
/// 1: network error or timeout).
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_redis_call_response(
    _root_context_id: u32,
    token: u32,
    status: u32,
    response_size: usize,
) {
    let Some(pending) = PENDING.with(|m| m.borrow_mut().remove(&token)) else {
        return;
    };
    let used = if status == 0 {
        reply(response_size).as_deref().and_then(number)
    } else {
        None
    };
    match pending {
        Pending::Check {
            context,
            who,
            budget,
            retry,
            flags,
        } => {
            flags.waiting.set(false);
            // The stream may be gone (the client left): nothing to answer.
            if hostcalls::set_effective_context(context).is_err() {
                return;
            }
            match used {
                Some(used) if used >= budget => reject(&who, used, budget, retry),
                Some(_) => {
                    let _ = hostcalls::resume_http_request();
                }
                None => {
                    flags.warn_once(&format!(
                        "llm-token-limit: redis budget check failed (status {status}); \
                         {who} let through (fail open)"
                    ));
                    let _ = hostcalls::resume_http_request();
                }
            }
        }
        Pending::Charge {
            who,
            tokens,
            budget,
            flags,
        } => match used {
            Some(used) => info!("llm-token-limit: {who} charged {tokens} tokens, {used}/{budget} used"),
            None => flags.warn_once(&format!(
                "llm-token-limit: redis charge failed (status {status}); {tokens} tokens of {who} not counted"
            )),
        },
    }
}
