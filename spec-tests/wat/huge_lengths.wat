;; huge_lengths.wat — hostcalls called with valid pointers but huge lengths
;; (0xFFFFFFFF and 0x7FFFFFFF), and serialized maps whose *contents* claim
;; huge counts/lengths.
;;
;; What it does
;;   proxy_on_request_headers runs each check once and logs its status at
;;   INFO as  "huge_lengths: <check>=<status>",  then
;;   "huge_lengths: proxy checks done", then two WASI fd_write checks, then
;;   "huge_lengths: done"; returns 0 (Continue).
;;   proxy_on_request_body: set_buffer_bytes.len_max.
;;   proxy_on_response_headers (map 2 = response headers):
;;     set_header_map_pairs.count_huge   payload: N = 0xFFFFFFFF, 12 bytes
;;     set_header_map_pairs.key_len_huge payload: N = 1, key_len 0x7FFFFFFF
;;     get_header_map_value.after_malformed  status of get(":status") after
;;   both; returns 0.
;;
;; What the host is expected to do (ABI reference §4, §5.1, §5.3)
;;   Never crash, hang or allocate gigabytes. Expected statuses:
;;   * every "*_len_*", "*size_max" check: INVALID_MEMORY_ACCESS (6) — the
;;     range [ptr, ptr+len) is outside guest memory. A host that checks a
;;     configured size limit before touching memory may return
;;     BAD_ARGUMENT (2) instead (document it in DEVIATIONS.md);
;;   * get_buffer_bytes.max_size_max: OK (0) — u32::MAX is the normal
;;     "read everything" value;
;;   * get_buffer_bytes.start_max (start = max = 0xFFFFFFFF): cpp-host/Envoy
;;     OK (0) with an empty result (64-bit addition); spec: BAD_ARGUMENT (2);
;;   * set_header_map_pairs.count_huge / key_len_huge: cpp-host/Envoy turn a
;;     malformed payload into an EMPTY map and return OK (0), so
;;     get_header_map_value.after_malformed is NOT_FOUND (1); a stricter host
;;     returns BAD_ARGUMENT (2) and leaves the map intact (then 0);
;;   * fd_write.iov_len_max / iov_sum_overflow: errno FAULT (21) or INVAL
;;     (28); never a read past memory. (Stock wasmtime-wasi may trap here.)
;;   * send_local_response.*: 6 and no reply is sent.
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value"
    (func $get_header_map_value (param i32 i32 i32 i32 i32) (result i32)))
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
  (import "env" "proxy_enqueue_shared_queue"
    (func $enqueue_shared_queue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric"
    (func $define_metric (param i32 i32 i32 i32) (result i32)))
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

  (data (i32.const 0x1000) "huge_lengths: \00")            ;; slot 0: prefix
  (data (i32.const 0x1040) "=\00")
  (data (i32.const 0x1080) ":path\00")
  (data (i32.const 0x10C0) "x-huge\00")
  (data (i32.const 0x1100) "huge value\00")
  (data (i32.const 0x1140) "auth\00")
  (data (i32.const 0x1180) "huge_q\00")
  (data (i32.const 0x11C0) "echo\00")
  (data (i32.const 0x1200) "huge_key\00")
  (data (i32.const 0x1240) "proxy checks done\00")
  (data (i32.const 0x1280) "done\00")
  (data (i32.const 0x12C0) ":status\00")
  (data (i32.const 0x1300) "huge_metric\00")

  (data (i32.const 0x2000) "proxy_log.len_max\00")
  (data (i32.const 0x2040) "proxy_log.len_2g\00")
  (data (i32.const 0x2080) "get_header_map_value.key_len_max\00")
  (data (i32.const 0x20C0) "add_header_map_value.value_len_2g\00")
  (data (i32.const 0x2100) "replace_header_map_value.key_len_max\00")
  (data (i32.const 0x2140) "remove_header_map_value.key_len_2g\00")
  (data (i32.const 0x2180) "set_header_map_pairs.size_max\00")
  (data (i32.const 0x21C0) "get_buffer_bytes.max_size_max\00")
  (data (i32.const 0x2200) "get_buffer_bytes.start_max\00")
  (data (i32.const 0x2240) "get_property.path_len_max\00")
  (data (i32.const 0x2280) "set_property.value_len_2g\00")
  (data (i32.const 0x22C0) "get_shared_data.key_len_max\00")
  (data (i32.const 0x2300) "set_shared_data.value_len_2g\00")
  (data (i32.const 0x2340) "register_shared_queue.name_len_max\00")
  (data (i32.const 0x2380) "enqueue_shared_queue.value_len_2g\00")
  (data (i32.const 0x23C0) "define_metric.name_len_max\00")
  (data (i32.const 0x2400) "http_call.headers_len_max\00")
  (data (i32.const 0x2440) "http_call.body_len_2g\00")
  (data (i32.const 0x2480) "call_foreign_function.args_len_max\00")
  (data (i32.const 0x24C0) "send_local_response.headers_len_max\00")
  (data (i32.const 0x2500) "send_local_response.body_len_max\00")
  (data (i32.const 0x2540) "fd_write.iov_len_max\00")
  (data (i32.const 0x2580) "fd_write.iov_sum_overflow\00")
  (data (i32.const 0x25C0) "set_buffer_bytes.len_max\00")
  (data (i32.const 0x2600) "set_header_map_pairs.count_huge\00")
  (data (i32.const 0x2640) "set_header_map_pairs.key_len_huge\00")
  (data (i32.const 0x2680) "get_header_map_value.after_malformed\00")

  ;; Serialized map (64 bytes): :method=GET, :path=/, :authority=auth
  (data (i32.const 0x8000)
    "\03\00\00\00"
    "\07\00\00\00\03\00\00\00" "\05\00\00\00\01\00\00\00" "\0a\00\00\00\04\00\00\00"
    ":method\00GET\00" ":path\00/\00" ":authority\00auth\00")
  ;; Malformed map, 12 bytes: N = 0xFFFFFFFF, then 8 zero bytes.
  (data (i32.const 0x8100) "\ff\ff\ff\ff\00\00\00\00\00\00\00\00")
  ;; Malformed map, 16 bytes: N = 1, key_len = 0x7FFFFFFF, value_len = 0, "k\00\00\00".
  (data (i32.const 0x8200) "\01\00\00\00\ff\ff\ff\7f\00\00\00\00k\00\00\00")

  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32)
    (result i32)
    (call $report (i32.const 0x2000)
      (call $proxy_log (i32.const 2) (i32.const 0x1100) (i32.const 0xFFFFFFFF)))
    (call $report (i32.const 0x2040)
      (call $proxy_log (i32.const 2) (i32.const 0x1100) (i32.const 0x7FFFFFFF)))
    (call $report (i32.const 0x2080)
      (call $get_header_map_value (i32.const 0) (i32.const 0x1080) (i32.const 0xFFFFFFFF)
        (i32.const 0x10) (i32.const 0x14)))
    (call $report (i32.const 0x20C0)
      (call $add_header_map_value (i32.const 0) (i32.const 0x10C0) (i32.const 6)
        (i32.const 0x1100) (i32.const 0x7FFFFFFF)))
    (call $report (i32.const 0x2100)
      (call $replace_header_map_value (i32.const 0) (i32.const 0x10C0) (i32.const 0xFFFFFFFF)
        (i32.const 0x1100) (i32.const 10)))
    (call $report (i32.const 0x2140)
      (call $remove_header_map_value (i32.const 0) (i32.const 0x10C0) (i32.const 0x7FFFFFFF)))
    (call $report (i32.const 0x2180)
      (call $set_header_map_pairs (i32.const 0) (i32.const 0x8000) (i32.const 0xFFFFFFFF)))
    (call $report (i32.const 0x21C0)
      (call $get_buffer_bytes (i32.const 6) (i32.const 0) (i32.const 0xFFFFFFFF)
        (i32.const 0x10) (i32.const 0x14)))
    (call $report (i32.const 0x2200)
      (call $get_buffer_bytes (i32.const 6) (i32.const 0xFFFFFFFF) (i32.const 0xFFFFFFFF)
        (i32.const 0x10) (i32.const 0x14)))
    (call $report (i32.const 0x2240)
      (call $get_property (i32.const 0x1080) (i32.const 0xFFFFFFFF) (i32.const 0x10) (i32.const 0x14)))
    (call $report (i32.const 0x2280)
      (call $set_property (i32.const 0x1200) (i32.const 8) (i32.const 0x1100) (i32.const 0x7FFFFFFF)))
    (call $report (i32.const 0x22C0)
      (call $get_shared_data (i32.const 0x1200) (i32.const 0xFFFFFFFF)
        (i32.const 0x10) (i32.const 0x14) (i32.const 0x18)))
    (call $report (i32.const 0x2300)
      (call $set_shared_data (i32.const 0x1200) (i32.const 8) (i32.const 0x1100) (i32.const 0x7FFFFFFF)
        (i32.const 0)))
    (call $report (i32.const 0x2340)
      (call $register_shared_queue (i32.const 0x1180) (i32.const 0xFFFFFFFF) (i32.const 0x18)))
    ;; enqueue needs a real token: register "huge_q" first (token at 0x18).
    (drop (call $register_shared_queue (i32.const 0x1180) (i32.const 6) (i32.const 0x18)))
    (call $report (i32.const 0x2380)
      (call $enqueue_shared_queue (i32.load (i32.const 0x18)) (i32.const 0x1100) (i32.const 0x7FFFFFFF)))
    (call $report (i32.const 0x23C0)
      (call $define_metric (i32.const 0) (i32.const 0x1300) (i32.const 0xFFFFFFFF) (i32.const 0x18)))
    (call $report (i32.const 0x2400)
      (call $http_call (i32.const 0x1140) (i32.const 4) (i32.const 0x8000) (i32.const 0xFFFFFFFF)
        (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 0x18)))
    (call $report (i32.const 0x2440)
      (call $http_call (i32.const 0x1140) (i32.const 4) (i32.const 0x8000) (i32.const 64)
        (i32.const 0x1100) (i32.const 0x7FFFFFFF) (i32.const 0) (i32.const 0) (i32.const 1000)
        (i32.const 0x18)))
    (call $report (i32.const 0x2480)
      (call $call_foreign_function (i32.const 0x11C0) (i32.const 4)
        (i32.const 0x1100) (i32.const 0xFFFFFFFF) (i32.const 0x10) (i32.const 0x14)))
    (call $report (i32.const 0x24C0)
      (call $send_local_response (i32.const 403) (i32.const 0) (i32.const 0)
        (i32.const 0) (i32.const 0) (i32.const 0x8000) (i32.const 0xFFFFFFFF) (i32.const -1)))
    (call $report (i32.const 0x2500)
      (call $send_local_response (i32.const 403) (i32.const 0) (i32.const 0)
        (i32.const 0x1100) (i32.const 0xFFFFFFFF) (i32.const 0) (i32.const 0) (i32.const -1)))
    (call $say (i32.const 0x1240))

    ;; One iovec of length u32::MAX.
    (i32.store (i32.const 0x20) (i32.const 0x1100))
    (i32.store (i32.const 0x24) (i32.const 0xFFFFFFFF))
    (call $report (i32.const 0x2540)
      (call $fd_write (i32.const 1) (i32.const 0x20) (i32.const 1) (i32.const 0x18)))
    ;; Two iovecs of 0x80000000 bytes each: the total wraps a u32 to 0.
    (i32.store (i32.const 0x20) (i32.const 0x1100))
    (i32.store (i32.const 0x24) (i32.const 0x80000000))
    (i32.store (i32.const 0x28) (i32.const 0x1100))
    (i32.store (i32.const 0x2C) (i32.const 0x80000000))
    (call $report (i32.const 0x2580)
      (call $fd_write (i32.const 1) (i32.const 0x20) (i32.const 2) (i32.const 0x18)))
    (call $say (i32.const 0x1280))
    (i32.const 0))

  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32)
    (result i32)
    (call $report (i32.const 0x25C0)
      (call $set_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 0)
        (i32.const 0x1100) (i32.const 0xFFFFFFFF)))
    (i32.const 0))

  (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32)
    (result i32)
    (call $report (i32.const 0x2600)
      (call $set_header_map_pairs (i32.const 2) (i32.const 0x8100) (i32.const 12)))
    (call $report (i32.const 0x2640)
      (call $set_header_map_pairs (i32.const 2) (i32.const 0x8200) (i32.const 16)))
    (call $report (i32.const 0x2680)
      (call $get_header_map_value (i32.const 2) (i32.const 0x12C0) (i32.const 7)
        (i32.const 0x10) (i32.const 0x14)))
    (i32.const 0))

  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32))
)
