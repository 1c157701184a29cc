;; bad_pointers.wat — hostcalls called with out-of-bounds guest pointers.
;;
;; What it does
;;   proxy_on_request_headers calls a long list of hostcalls, each with ONE
;;   pointer argument out of bounds (everything else valid), and logs the
;;   returned status at INFO as
;;       bad_pointers: <check>=<status>
;;   then "bad_pointers: proxy checks done", then two WASI fd_write checks
;;   (logged the same way), then "bad_pointers: done". It returns 0
;;   (Continue). proxy_on_request_body does two buffer checks the same way
;;   (the request body only exists there).
;;   "Out of bounds" is 0xFFFFFF00 (far past the 2-page memory), except
;;   proxy_log.wrap (ptr 0xFFFFFFFF, len 2: ptr+len wraps a u32) and
;;   proxy_log.past_end (starts 8 bytes before the end of memory, len 16).
;;
;; What the host is expected to do (ABI reference §4, §5.3)
;;   Never crash or trap: every proxy_* check returns INVALID_MEMORY_ACCESS
;;   (6). fd_write checks: cpp-host returns errno FAULT (21); wasmtime-wasi
;;   also reports a bad guest pointer as an errno, never a host panic.
;;   Checks whose bad pointer is an *output* (ret_ptr, ret_size, ret_token)
;;   must not leave side effects behind (e.g. http_call.ret_token must not
;;   dispatch a call the guest can never learn the token of; a host that
;;   does so anyway still has to return 6).
;;   send_local_response.body must not send a reply.
;;   Accepted deviation: a host may return BAD_ARGUMENT/NOT_FOUND where it
;;   validates other arguments before reading memory; the log shows which.
(module
  (type $t_log (func (param i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $proxy_log (type $t_log)))
  (import "env" "proxy_get_header_map_value"
    (func $get_header_map_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs"
    (func $get_header_map_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_size"
    (func $get_header_map_size (param i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value"
    (func $add_header_map_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value"
    (func $replace_header_map_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value"
    (func $remove_header_map_value (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_header_map_pairs"
    (func $set_header_map_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes"
    (func $get_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes"
    (func $set_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property"
    (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_property"
    (func $set_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data"
    (func $get_shared_data (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data"
    (func $set_shared_data (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_register_shared_queue"
    (func $register_shared_queue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_resolve_shared_queue"
    (func $resolve_shared_queue (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric"
    (func $define_metric (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_metric"
    (func $get_metric (param i32 i32) (result i32)))
  (import "env" "proxy_get_current_time_nanoseconds"
    (func $get_current_time_nanoseconds (param i32) (result i32)))
  (import "env" "proxy_get_log_level"
    (func $get_log_level (param i32) (result i32)))
  (import "env" "proxy_call_foreign_function"
    (func $call_foreign_function (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call"
    (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $send_local_response (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))

  ;; ------------------------------------------------------------------
  ;; Common prelude (same in every logging WAT module of this folder).
  ;; Memory layout:
  ;;   0x0000-0x00FF  hostcall out-parameters (0x10 ret ptr, 0x14 ret size,
  ;;                  0x18 u32/u64 out, 0x20 iovecs)
  ;;   0x0100-0x08FF  line buffer for log messages
  ;;   0x0900-0x09FF  digit scratch
  ;;   0x1000-0x7FFF  NUL-terminated strings, one per 64-byte slot
  ;;   0x8000-0xFFFF  binary constants (serialized maps)
  ;;   0x10000-       bump heap of the allocator (grows memory on demand)
  ;; ------------------------------------------------------------------
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 0x10000))
  (global $len (mut i32) (i32.const 0))

  ;; Bump allocator: 8-byte aligned, never frees, 0 on failure.
  (func $alloc (param $size i32) (result i32)
    (local $p i32) (local $end i32) (local $have i32)
    (if (i32.gt_u (local.get $size) (i32.const 0x10000000))
      (then (return (i32.const 0))))
    (local.set $p (global.get $heap))
    (local.set $end
      (i32.and (i32.add (i32.add (local.get $p) (local.get $size)) (i32.const 7))
               (i32.const -8)))
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow
                (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have))
                                    (i32.const 0xFFFF))
                           (i32.const 16)))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $p))
  (export "proxy_on_memory_allocate" (func $alloc))
  (export "malloc" (func $alloc))

  (func $strlen (param $p i32) (result i32)
    (local $n i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $n))
  ;; Appends $n bytes at $p to the line buffer (truncated at 0x700 bytes).
  (func $put (param $p i32) (param $n i32)
    (if (i32.gt_u (i32.add (global.get $len) (local.get $n)) (i32.const 0x700))
      (then (local.set $n (i32.sub (i32.const 0x700) (global.get $len)))))
    (memory.copy (i32.add (i32.const 0x100) (global.get $len)) (local.get $p) (local.get $n))
    (global.set $len (i32.add (global.get $len) (local.get $n))))
  (func $puts (param $p i32) (call $put (local.get $p) (call $strlen (local.get $p))))
  ;; Appends $v as unsigned decimal.
  (func $putu (param $v i32)
    (local $i i32)
    (local.set $i (i32.const 0x0A00))
    (loop $digit
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (local.get $i)
        (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $digit (local.get $v)))
    (call $put (local.get $i) (i32.sub (i32.const 0x0A00) (local.get $i))))
  ;; Logs the line buffer at $level and clears it.
  (func $flush (param $level i32)
    (drop (call $proxy_log (local.get $level) (i32.const 0x100) (global.get $len)))
    (global.set $len (i32.const 0)))
  ;; Logs "<prefix (slot 0)><name>=<status>" at INFO.
  (func $report (param $name i32) (param $status i32)
    (call $puts (i32.const 0x1000))
    (call $puts (local.get $name))
    (call $puts (i32.const 0x1040))
    (call $putu (local.get $status))
    (call $flush (i32.const 2)))
  ;; Logs "<prefix (slot 0)><text>" at INFO.
  (func $say (param $text i32)
    (call $puts (i32.const 0x1000))
    (call $puts (local.get $text))
    (call $flush (i32.const 2)))
  ;; ---------------------------- end of prelude ----------------------

  (data (i32.const 0x1000) "bad_pointers: \00")            ;; slot 0: prefix
  (data (i32.const 0x1040) "=\00")
  (data (i32.const 0x1080) ":path\00")
  (data (i32.const 0x10C0) "plugin_name\00")
  (data (i32.const 0x1100) "x-bad\00")
  (data (i32.const 0x1140) "auth\00")
  (data (i32.const 0x1180) "bad_pointers_counter\00")
  (data (i32.const 0x11C0) "done\00")
  (data (i32.const 0x1200) "proxy checks done\00")
  (data (i32.const 0x1240) "q\00")
  (data (i32.const 0x1280) "bad_key\00")
  (data (i32.const 0x12C0) "echo\00")

  (data (i32.const 0x2000) "proxy_log.oob_ptr\00")
  (data (i32.const 0x2040) "proxy_log.wrap\00")
  (data (i32.const 0x2080) "proxy_log.past_end\00")
  (data (i32.const 0x20C0) "get_header_map_value.key\00")
  (data (i32.const 0x2100) "get_header_map_value.ret_ptr\00")
  (data (i32.const 0x2140) "get_header_map_value.ret_size\00")
  (data (i32.const 0x2180) "get_header_map_pairs.ret_ptr\00")
  (data (i32.const 0x21C0) "get_header_map_size.ret\00")
  (data (i32.const 0x2200) "add_header_map_value.key\00")
  (data (i32.const 0x2240) "add_header_map_value.value\00")
  (data (i32.const 0x2280) "replace_header_map_value.value\00")
  (data (i32.const 0x22C0) "remove_header_map_value.key\00")
  (data (i32.const 0x2300) "set_header_map_pairs.data\00")
  (data (i32.const 0x2340) "get_buffer_bytes.ret_ptr\00")
  (data (i32.const 0x2380) "get_property.path\00")
  (data (i32.const 0x23C0) "get_property.ret_ptr\00")
  (data (i32.const 0x2400) "set_property.value\00")
  (data (i32.const 0x2440) "get_shared_data.key\00")
  (data (i32.const 0x2480) "set_shared_data.value\00")
  (data (i32.const 0x24C0) "register_shared_queue.name\00")
  (data (i32.const 0x2500) "resolve_shared_queue.vm_id\00")
  (data (i32.const 0x2540) "define_metric.name\00")
  (data (i32.const 0x2580) "get_metric.ret\00")
  (data (i32.const 0x25C0) "get_current_time_nanoseconds.ret\00")
  (data (i32.const 0x2600) "get_log_level.ret\00")
  (data (i32.const 0x2640) "call_foreign_function.name\00")
  (data (i32.const 0x2680) "http_call.upstream\00")
  (data (i32.const 0x26C0) "http_call.ret_token\00")
  (data (i32.const 0x2700) "send_local_response.body\00")
  (data (i32.const 0x2740) "fd_write.iovs\00")
  (data (i32.const 0x2780) "fd_write.buf\00")
  (data (i32.const 0x27C0) "get_buffer_bytes.body_ret_ptr\00")
  (data (i32.const 0x2800) "set_buffer_bytes.data\00")

  ;; Serialized map (64 bytes): :method=GET, :path=/, :authority=auth
  (data (i32.const 0x8000)
    "\03\00\00\00"
    "\07\00\00\00\03\00\00\00" "\05\00\00\00\01\00\00\00" "\0a\00\00\00\04\00\00\00"
    ":method\00GET\00" ":path\00/\00" ":authority\00auth\00")

  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32)
    (result i32)
    (local $end i32)
    (local.set $end (i32.shl (memory.size) (i32.const 16)))

    (call $report (i32.const 0x2000)
      (call $proxy_log (i32.const 2) (i32.const 0xFFFFFF00) (i32.const 16)))
    (call $report (i32.const 0x2040)
      (call $proxy_log (i32.const 2) (i32.const 0xFFFFFFFF) (i32.const 2)))
    (call $report (i32.const 0x2080)
      (call $proxy_log (i32.const 2) (i32.sub (local.get $end) (i32.const 8)) (i32.const 16)))

    (call $report (i32.const 0x20C0)
      (call $get_header_map_value (i32.const 0) (i32.const 0xFFFFFF00) (i32.const 5)
        (i32.const 0x10) (i32.const 0x14)))
    (call $report (i32.const 0x2100)
      (call $get_header_map_value (i32.const 0) (i32.const 0x1080) (i32.const 5)
        (i32.const 0xFFFFFF00) (i32.const 0x14)))
    (call $report (i32.const 0x2140)
      (call $get_header_map_value (i32.const 0) (i32.const 0x1080) (i32.const 5)
        (i32.const 0x10) (i32.const 0xFFFFFF00)))
    (call $report (i32.const 0x2180)
      (call $get_header_map_pairs (i32.const 0) (i32.const 0xFFFFFF00) (i32.const 0x14)))
    (call $report (i32.const 0x21C0)
      (call $get_header_map_size (i32.const 0) (i32.const 0xFFFFFF00)))
    (call $report (i32.const 0x2200)
      (call $add_header_map_value (i32.const 0) (i32.const 0xFFFFFF00) (i32.const 4)
        (i32.const 0x1140) (i32.const 4)))
    (call $report (i32.const 0x2240)
      (call $add_header_map_value (i32.const 0) (i32.const 0x1100) (i32.const 5)
        (i32.const 0xFFFFFF00) (i32.const 4)))
    (call $report (i32.const 0x2280)
      (call $replace_header_map_value (i32.const 0) (i32.const 0x1100) (i32.const 5)
        (i32.const 0xFFFFFF00) (i32.const 4)))
    (call $report (i32.const 0x22C0)
      (call $remove_header_map_value (i32.const 0) (i32.const 0xFFFFFF00) (i32.const 4)))
    (call $report (i32.const 0x2300)
      (call $set_header_map_pairs (i32.const 0) (i32.const 0xFFFFFF00) (i32.const 16)))
    (call $report (i32.const 0x2340)
      (call $get_buffer_bytes (i32.const 6) (i32.const 0) (i32.const 16)
        (i32.const 0xFFFFFF00) (i32.const 0x14)))
    (call $report (i32.const 0x2380)
      (call $get_property (i32.const 0xFFFFFF00) (i32.const 11) (i32.const 0x10) (i32.const 0x14)))
    (call $report (i32.const 0x23C0)
      (call $get_property (i32.const 0x10C0) (i32.const 11) (i32.const 0xFFFFFF00) (i32.const 0x14)))
    (call $report (i32.const 0x2400)
      (call $set_property (i32.const 0x1280) (i32.const 7) (i32.const 0xFFFFFF00) (i32.const 4)))
    (call $report (i32.const 0x2440)
      (call $get_shared_data (i32.const 0xFFFFFF00) (i32.const 4)
        (i32.const 0x10) (i32.const 0x14) (i32.const 0x18)))
    (call $report (i32.const 0x2480)
      (call $set_shared_data (i32.const 0x1280) (i32.const 7) (i32.const 0xFFFFFF00) (i32.const 4)
        (i32.const 0)))
    (call $report (i32.const 0x24C0)
      (call $register_shared_queue (i32.const 0xFFFFFF00) (i32.const 4) (i32.const 0x18)))
    (call $report (i32.const 0x2500)
      (call $resolve_shared_queue (i32.const 0xFFFFFF00) (i32.const 4)
        (i32.const 0x1240) (i32.const 1) (i32.const 0x18)))
    (call $report (i32.const 0x2540)
      (call $define_metric (i32.const 0) (i32.const 0xFFFFFF00) (i32.const 4) (i32.const 0x18)))
    ;; get_metric needs a real id: define a valid counter first (id at 0x18).
    (drop (call $define_metric (i32.const 0) (i32.const 0x1180) (i32.const 20) (i32.const 0x18)))
    (call $report (i32.const 0x2580)
      (call $get_metric (i32.load (i32.const 0x18)) (i32.const 0xFFFFFF00)))
    (call $report (i32.const 0x25C0)
      (call $get_current_time_nanoseconds (i32.const 0xFFFFFF00)))
    (call $report (i32.const 0x2600)
      (call $get_log_level (i32.const 0xFFFFFF00)))
    (call $report (i32.const 0x2640)
      (call $call_foreign_function (i32.const 0xFFFFFF00) (i32.const 4)
        (i32.const 0x1140) (i32.const 4) (i32.const 0x10) (i32.const 0x14)))
    (call $report (i32.const 0x2680)
      (call $http_call (i32.const 0xFFFFFF00) (i32.const 4) (i32.const 0x8000) (i32.const 64)
        (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 0x18)))
    (call $report (i32.const 0x26C0)
      (call $http_call (i32.const 0x1140) (i32.const 4) (i32.const 0x8000) (i32.const 64)
        (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000)
        (i32.const 0xFFFFFF00)))
    (call $report (i32.const 0x2700)
      (call $send_local_response (i32.const 403) (i32.const 0) (i32.const 0)
        (i32.const 0xFFFFFF00) (i32.const 8) (i32.const 0) (i32.const 0) (i32.const -1)))
    (call $say (i32.const 0x1200))

    ;; WASI: the iovec array itself out of bounds...
    (call $report (i32.const 0x2740)
      (call $fd_write (i32.const 1) (i32.const 0xFFFFFF00) (i32.const 1) (i32.const 0x18)))
    ;; ...and a valid iovec whose buffer is out of bounds.
    (i32.store (i32.const 0x20) (i32.const 0xFFFFFF00))
    (i32.store (i32.const 0x24) (i32.const 8))
    (call $report (i32.const 0x2780)
      (call $fd_write (i32.const 1) (i32.const 0x20) (i32.const 1) (i32.const 0x18)))
    (call $say (i32.const 0x11C0))
    (i32.const 0))

  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32)
    (result i32)
    (call $report (i32.const 0x27C0)
      (call $get_buffer_bytes (i32.const 0) (i32.const 0) (local.get $size)
        (i32.const 0xFFFFFF00) (i32.const 0x14)))
    (call $report (i32.const 0x2800)
      (call $set_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 0)
        (i32.const 0xFFFFFF00) (i32.const 8)))
    (i32.const 0))

  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32))
)
