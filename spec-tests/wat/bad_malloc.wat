;; bad_malloc.wat — the guest allocator returns garbage: 0xFFFFFFF0, an
;; address far outside the 2-page memory (and one where ptr + size wraps a
;; u32 for sizes >= 16).
;;
;; What it does
;;   Both `malloc` and `proxy_on_memory_allocate` are that bad allocator
;;   (so the host's preference does not matter); it counts its calls.
;;   proxy_on_vm_start reads the VM configuration (buffer 6) and logs
;;       bad_malloc: vm_start.get_buffer_bytes.vm_config=<status>
;;   proxy_on_request_headers logs "bad_malloc: <check>=<status>" for:
;;       get_header_map_value   (":path" of the request headers)
;;       get_header_map_pairs   (request headers)
;;       get_property           ("plugin_name")
;;       set_shared_data        ("bm_key" = "value"; needs no allocation)
;;       get_shared_data        ("bm_key")
;;       get_buffer_bytes.vm_config
;;       call_foreign_function  ("echo" with argument "value")
;;   then "bad_malloc: malloc_calls=<n>" and "bad_malloc: done"; returns 0.
;;
;; What the host is expected to do (ABI reference §5.3)
;;   Every hostcall that must hand data to the guest returns
;;   INVALID_MEMORY_ACCESS (6) and writes nothing (no trap, no crash):
;;   get_header_map_value, get_header_map_pairs, get_property,
;;   get_shared_data, call_foreign_function (if "echo" exists; NOT_FOUND (1)
;;   otherwise) = 6. set_shared_data = 0. get_buffer_bytes.vm_config = 6 when
;;   the VM configuration is non-empty, 0 when it is empty (a 0-byte result
;;   is returned as (0, 0) without calling the allocator). malloc_calls > 0.
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value"
    (func $get_header_map_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs"
    (func $get_header_map_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes"
    (func $get_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property"
    (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data"
    (func $get_shared_data (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data"
    (func $set_shared_data (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_call_foreign_function"
    (func $call_foreign_function (param i32 i32 i32 i32 i32 i32) (result i32)))

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
  ;; (this module exports its own allocator, see below; $alloc is unused)

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

  ;; The bad allocator.
  (global $malloc_calls (mut i32) (i32.const 0))
  (func $bad_alloc (param $size i32) (result i32)
    (global.set $malloc_calls (i32.add (global.get $malloc_calls) (i32.const 1)))
    (i32.const 0xFFFFFFF0))
  (export "proxy_on_memory_allocate" (func $bad_alloc))
  (export "malloc" (func $bad_alloc))

  (data (i32.const 0x1000) "bad_malloc: \00")               ;; slot 0: prefix
  (data (i32.const 0x1040) "=\00")
  (data (i32.const 0x1080) ":path\00")
  (data (i32.const 0x10C0) "plugin_name\00")
  (data (i32.const 0x1100) "bm_key\00")
  (data (i32.const 0x1140) "value\00")
  (data (i32.const 0x1180) "echo\00")
  (data (i32.const 0x11C0) "done\00")

  (data (i32.const 0x2000) "get_header_map_value\00")
  (data (i32.const 0x2040) "get_header_map_pairs\00")
  (data (i32.const 0x2080) "get_property\00")
  (data (i32.const 0x20C0) "set_shared_data\00")
  (data (i32.const 0x2100) "get_shared_data\00")
  (data (i32.const 0x2140) "get_buffer_bytes.vm_config\00")
  (data (i32.const 0x2180) "call_foreign_function\00")
  (data (i32.const 0x21C0) "vm_start.get_buffer_bytes.vm_config\00")
  (data (i32.const 0x2200) "malloc_calls\00")

  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (call $report (i32.const 0x21C0)
      (call $get_buffer_bytes (i32.const 6) (i32.const 0) (i32.const 0xFFFFFFFF)
        (i32.const 0x10) (i32.const 0x14)))
    (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32)
    (result i32)
    (call $report (i32.const 0x2000)
      (call $get_header_map_value (i32.const 0) (i32.const 0x1080) (i32.const 5)
        (i32.const 0x10) (i32.const 0x14)))
    (call $report (i32.const 0x2040)
      (call $get_header_map_pairs (i32.const 0) (i32.const 0x10) (i32.const 0x14)))
    (call $report (i32.const 0x2080)
      (call $get_property (i32.const 0x10C0) (i32.const 11) (i32.const 0x10) (i32.const 0x14)))
    (call $report (i32.const 0x20C0)
      (call $set_shared_data (i32.const 0x1100) (i32.const 6) (i32.const 0x1140) (i32.const 5)
        (i32.const 0)))
    (call $report (i32.const 0x2100)
      (call $get_shared_data (i32.const 0x1100) (i32.const 6)
        (i32.const 0x10) (i32.const 0x14) (i32.const 0x18)))
    (call $report (i32.const 0x2140)
      (call $get_buffer_bytes (i32.const 6) (i32.const 0) (i32.const 0xFFFFFFFF)
        (i32.const 0x10) (i32.const 0x14)))
    (call $report (i32.const 0x2180)
      (call $call_foreign_function (i32.const 0x1180) (i32.const 4)
        (i32.const 0x1140) (i32.const 5) (i32.const 0x10) (i32.const 0x14)))
    (call $report (i32.const 0x2200) (global.get $malloc_calls))
    (call $say (i32.const 0x11C0))
    (i32.const 0))

  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32))
)
