//! What each provided import may return, as its module docs in `vessel-host` say
//! (`crates/vessel-host/src/hostcalls/*.rs` for `env`, `crates/vessel-host/src/wasi.rs` for
//! WASI; ABI reference §4, §7, §11.20).
//!
//! The `hostcalls` oracle checks every result a guest sees against this table. A test keeps
//! the table and [`import_table`](vessel_host::hostcalls::import_table) in step: every import
//! has exactly one entry, and every entry names an import.
//!
//! Where a module doc lists statuses without naming `INVALID_MEMORY_ACCESS`, the general rule
//! of `memory.rs` (ABI reference §5.3) applies: every bad guest address or length, and every
//! failed guest allocation, is `INVALID_MEMORY_ACCESS`. Such hostcalls list `MEM` (that status) in the table.

use vessel_abi::Status;
use vessel_host::wasi::errno;

/// What a call to one import may give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A proxy-wasm status from this set.
    Status(&'static [Status]),
    /// A WASI errno from this set.
    Errno(&'static [i32]),
    /// `pthread_equal(a, b)`: exactly `a == b`.
    PthreadEqual,
    /// No result (`emscripten_notify_memory_growth`).
    NoResult,
    /// Never returns: `proc_exit(code)` stops the guest with
    /// [`TrapKind::ProcExit(code)`](vessel_host::TrapKind::ProcExit).
    ProcExit,
}

use Status::{
    BadArgument, CasMismatch, Empty, InternalFailure, InvalidMemoryAccess, NotFound, Ok,
    ParseFailure, SerializationFailure, Unimplemented,
};

/// Marks a hostcall that reads or writes guest memory (see the module docs).
const MEM: Status = InvalidMemoryAccess;

/// The documented results of `module.name`, or `None` if the table has no entry.
pub fn documented(module: &str, name: &str) -> Option<Expect> {
    if module == "env" {
        return env(name);
    }
    if module == "wasi_snapshot_preview1" || module == "wasi_unstable" {
        return wasi(name);
    }
    None
}

/// Every (module, name) the table covers.
pub fn entries() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> =
        ENV_NAMES.iter().map(|name| ("env", *name)).collect();
    for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
        out.extend(WASI_NAMES.iter().map(|name| (module, *name)));
    }
    out
}

const ENV_NAMES: &[&str] = &[
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_get_buffer_status",
    "proxy_get_configuration",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_size",
    "proxy_get_header_map_value",
    "proxy_add_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
    "proxy_get_metric",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_continue_request",
    "proxy_continue_response",
    "proxy_clear_route_cache",
    "proxy_send_local_response",
    "proxy_set_effective_context",
    "proxy_done",
    "proxy_get_status",
    "proxy_call_foreign_function",
    "envoy_resolve_dns",
    "proxy_redis_init",
    "proxy_redis_call",
    "pthread_equal",
    "emscripten_notify_memory_growth",
];

/// `env` imports: `hostcalls/*.rs` module docs.
fn env(name: &str) -> Option<Expect> {
    let set: &'static [Status] = match name {
        // log.rs
        "proxy_log" => &[Ok, BadArgument, MEM],
        "proxy_get_log_level" => &[Ok, MEM],
        // time.rs
        "proxy_get_current_time_nanoseconds" => &[Ok, MEM],
        "proxy_set_tick_period_milliseconds" => &[Ok],
        // buffers.rs
        "proxy_get_buffer_bytes" => &[Ok, BadArgument, NotFound, MEM],
        "proxy_set_buffer_bytes" => &[Ok, BadArgument, NotFound, MEM],
        "proxy_get_buffer_status" => &[Ok, BadArgument, NotFound, MEM],
        "proxy_get_configuration" => &[Ok, MEM],
        // maps.rs
        "proxy_get_header_map_pairs" => &[Ok, BadArgument, MEM],
        "proxy_set_header_map_pairs" => &[Ok, BadArgument, MEM],
        "proxy_get_header_map_size" => &[Ok, BadArgument, MEM],
        "proxy_get_header_map_value" => &[Ok, NotFound, BadArgument, MEM],
        "proxy_add_header_map_value"
        | "proxy_replace_header_map_value"
        | "proxy_remove_header_map_value" => &[Ok, BadArgument, MEM],
        // properties.rs: a provider may give NOT_FOUND, SERIALIZATION_FAILURE or
        // INTERNAL_FAILURE.
        "proxy_get_property" => &[Ok, NotFound, SerializationFailure, InternalFailure, MEM],
        "proxy_set_property" => &[Ok, NotFound, MEM],
        // shared_data.rs
        "proxy_get_shared_data" => &[Ok, NotFound, MEM],
        "proxy_set_shared_data" => &[Ok, CasMismatch, BadArgument, MEM],
        // queues.rs
        "proxy_register_shared_queue" => &[Ok, MEM],
        "proxy_resolve_shared_queue" => &[Ok, NotFound, MEM],
        "proxy_enqueue_shared_queue" => &[Ok, NotFound, InternalFailure, MEM],
        "proxy_dequeue_shared_queue" => &[Ok, NotFound, Empty, MEM],
        // metrics.rs
        "proxy_define_metric" => &[Ok, BadArgument, MEM],
        "proxy_increment_metric" => &[Ok, BadArgument, NotFound],
        "proxy_record_metric" => &[Ok, NotFound],
        "proxy_get_metric" => &[Ok, BadArgument, NotFound, MEM],
        // callouts.rs
        "proxy_http_call" => &[Ok, BadArgument, InternalFailure, MEM],
        "proxy_grpc_call" | "proxy_grpc_stream" => &[Ok, ParseFailure, InternalFailure, MEM],
        "proxy_grpc_send" => &[Ok, BadArgument, NotFound, MEM],
        "proxy_grpc_cancel" | "proxy_grpc_close" => &[Ok, NotFound],
        // stream_control.rs
        "proxy_continue_stream" => &[Ok, BadArgument, Unimplemented],
        "proxy_close_stream" => &[Ok, BadArgument],
        "proxy_continue_request" | "proxy_continue_response" | "proxy_clear_route_cache" => &[Ok],
        "proxy_send_local_response" => &[Ok, MEM],
        "proxy_set_effective_context" => &[Ok, BadArgument],
        "proxy_done" => &[Ok, NotFound],
        "proxy_get_status" => &[Ok, MEM],
        // foreign.rs: "the function's own error status is passed through"; the harness's
        // functions fail only with BAD_ARGUMENT (see `hostcalls::Control`).
        "proxy_call_foreign_function" => &[Ok, NotFound, BadArgument, MEM],
        // misc.rs
        "envoy_resolve_dns" => &[Unimplemented],
        // redis.rs (Higress 0.2.100)
        "proxy_redis_init" => &[Ok, BadArgument, MEM],
        "proxy_redis_call" => &[Ok, BadArgument, InternalFailure, MEM],
        "pthread_equal" => return Some(Expect::PthreadEqual),
        "emscripten_notify_memory_growth" => return Some(Expect::NoResult),
        _ => return None,
    };
    Some(Expect::Status(set))
}

const WASI_NAMES: &[&str] = &[
    "fd_write",
    "fd_pwrite",
    "fd_read",
    "fd_pread",
    "fd_seek",
    "fd_close",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_advise",
    "fd_allocate",
    "fd_datasync",
    "fd_sync",
    "fd_tell",
    "fd_readdir",
    "fd_renumber",
    "path_open",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_create_directory",
    "path_remove_directory",
    "path_unlink_file",
    "path_link",
    "path_rename",
    "path_symlink",
    "path_readlink",
    "environ_sizes_get",
    "environ_get",
    "args_sizes_get",
    "args_get",
    "clock_time_get",
    "clock_res_get",
    "random_get",
    "sched_yield",
    "poll_oneoff",
    "proc_raise",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
    "proc_exit",
];

/// WASI imports: the list in `wasi.rs`'s module docs. A bad out-pointer is FAULT.
fn wasi(name: &str) -> Option<Expect> {
    use errno::{BADF, FAULT, INVAL, NOENT, NOSYS, NOTDIR, NOTSUP, SUCCESS};
    let set: &'static [i32] = match name {
        // fd 1 and 2 are the log; others BADF.
        "fd_write" | "fd_pwrite" => &[SUCCESS, BADF, FAULT],
        // No filesystem.
        "fd_read" | "fd_pread" | "fd_fdstat_set_flags" | "fd_prestat_dir_name" => &[NOSYS],
        "fd_seek" | "fd_close" | "fd_advise" | "args_get" | "sched_yield" => &[SUCCESS],
        "fd_fdstat_get" | "fd_tell" => &[SUCCESS, BADF, FAULT],
        "fd_fdstat_set_rights"
        | "fd_filestat_set_size"
        | "fd_filestat_set_times"
        | "fd_allocate"
        | "fd_datasync"
        | "fd_sync" => &[SUCCESS, BADF],
        "fd_prestat_get" | "fd_filestat_get" | "fd_renumber" => &[BADF],
        "fd_readdir" => &[NOTDIR, FAULT],
        "path_open" => &[NOENT],
        "path_filestat_get"
        | "path_filestat_set_times"
        | "path_create_directory"
        | "path_remove_directory"
        | "path_unlink_file"
        | "path_link"
        | "path_rename"
        | "path_symlink"
        | "proc_raise"
        | "sock_shutdown" => &[NOTSUP],
        "path_readlink" | "sock_accept" | "sock_recv" | "sock_send" => &[NOTSUP, FAULT],
        "environ_sizes_get" | "environ_get" | "args_sizes_get" | "poll_oneoff" => &[SUCCESS, FAULT],
        // REALTIME and MONOTONIC; other clocks NOTSUP.
        "clock_time_get" | "clock_res_get" => &[SUCCESS, NOTSUP, FAULT],
        // At most 64 KiB per call.
        "random_get" => &[SUCCESS, INVAL, FAULT],
        "proc_exit" => return Some(Expect::ProcExit),
        _ => return None,
    };
    Some(Expect::Errno(set))
}

/// The limits a call of `module.name` may fail its VM with, by knob
/// ([`LimitExceeded::knob`](vessel_host::LimitExceeded::knob)), as the module docs of
/// `hostcalls/*.rs` say. Every other import never traps on a limit.
pub fn limit_traps(module: &str, name: &str) -> &'static [&'static str] {
    const MAP: &[&str] = &[
        "Limits::max_header_map_bytes",
        "Limits::max_header_map_entries",
    ];
    const EFFECT: &[&str] = &["Limits::max_effect_bytes"];
    if module != "env" {
        return &[];
    }
    match name {
        "proxy_add_header_map_value"
        | "proxy_replace_header_map_value"
        | "proxy_set_header_map_pairs" => MAP,
        "proxy_set_buffer_bytes" => &["Limits::max_body_bytes"],
        "proxy_set_property" => &["Limits::max_property_bytes"],
        "proxy_send_local_response" => &[
            "Limits::max_header_map_bytes",
            "Limits::max_header_map_entries",
            "Limits::max_effect_bytes",
        ],
        "proxy_continue_stream"
        | "proxy_close_stream"
        | "proxy_continue_request"
        | "proxy_continue_response"
        | "proxy_clear_route_cache"
        | "proxy_set_tick_period_milliseconds"
        | "proxy_grpc_cancel"
        | "proxy_grpc_close" => EFFECT,
        "proxy_define_metric" => &["Limits::max_metrics", "Limits::max_metric_name_bytes"],
        "proxy_register_shared_queue" => &[
            "SharedQueueLimits::max_queues_per_vm_id",
            "SharedQueueLimits::max_name_bytes",
        ],
        _ => &[],
    }
}

impl Expect {
    /// Whether `result` is allowed for a call with arguments `args`. `result` is the i32
    /// result zero-extended, or [`NO_RESULT`] for an import without a result.
    pub fn allows(self, args: &[u64], result: i64) -> bool {
        let as_i32 = || (result != NO_RESULT).then_some(result as u32 as i32);
        match self {
            Self::Status(set) => {
                as_i32().is_some_and(|r| set.iter().any(|s| s.as_u32() as i32 == r))
            }
            Self::Errno(set) => as_i32().is_some_and(|r| set.contains(&r)),
            Self::PthreadEqual => {
                let equal = args.first().map(|a| *a as u32) == args.get(1).map(|b| *b as u32);
                as_i32() == Some(i32::from(equal))
            }
            Self::NoResult => result == NO_RESULT,
            // It must never return.
            Self::ProcExit => false,
        }
    }
}

/// The value the `hostcalls` guest reports for an import without a result.
pub const NO_RESULT: i64 = 1 << 32;

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use vessel_host::hostcalls::import_table;

    /// Every import vessel provides has an entry, and every entry is an import.
    #[test]
    fn table_matches_the_import_table() {
        let table = import_table();
        for sig in table.iter() {
            assert!(
                documented(sig.module, sig.name).is_some(),
                "{}.{} has no documented results in fuzz/src/documented.rs",
                sig.module,
                sig.name
            );
        }
        let entries = entries();
        let unique: HashSet<_> = entries.iter().collect();
        assert_eq!(unique.len(), entries.len(), "duplicate entries");
        for (module, name) in &entries {
            assert!(
                table.get(module, name).is_some(),
                "{module}.{name} is documented but not provided"
            );
            assert!(documented(module, name).is_some(), "{module}.{name}");
        }
        assert_eq!(entries.len(), table.len());
    }

    /// Results without a value are told apart from i32 results.
    #[test]
    fn expectations_check_results() {
        let log = documented("env", "proxy_log").expect("entry");
        assert!(log.allows(&[], 0));
        assert!(log.allows(&[], i64::from(Status::BadArgument.as_u32())));
        assert!(!log.allows(&[], i64::from(Status::NotFound.as_u32())));
        assert!(!log.allows(&[], NO_RESULT));
        let eq = documented("env", "pthread_equal").expect("entry");
        assert!(eq.allows(&[3, 3], 1));
        assert!(!eq.allows(&[3, 4], 1));
        assert!(eq.allows(&[3, 3 | (1 << 32)], 1), "only the i32 bits count");
        let growth = documented("env", "emscripten_notify_memory_growth").expect("entry");
        assert!(growth.allows(&[0], NO_RESULT));
        assert!(!growth.allows(&[0], 0));
        let exit = documented("wasi_unstable", "proc_exit").expect("entry");
        assert!(!exit.allows(&[0], NO_RESULT));
        let write = documented("wasi_snapshot_preview1", "fd_write").expect("entry");
        assert!(write.allows(&[], i64::from(errno::BADF)));
        assert!(!write.allows(&[], i64::from(errno::NOSYS)));
    }
}
