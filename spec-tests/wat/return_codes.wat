;; return_codes.wat — returns raw status codes from the HTTP callbacks, the
;; way C++ SDK filters do (FilterHeadersStatus 0-4, FilterDataStatus 0-3,
;; FilterTrailersStatus 0-1, or anything else), which the Rust and Go SDKs
;; cannot produce.
;;
;; What it does
;;   proxy_on_request_headers reads six request headers (decimal u32; absent
;;   or not a number = 0) and remembers them:
;;       x-return-request-headers    x-return-request-body
;;       x-return-request-trailers   x-return-response-headers
;;       x-return-response-body      x-return-response-trailers
;;   Each of the six callbacks then logs
;;       return_codes: <callback>=<value>
;;   (callback = on_request_headers, on_request_body, on_request_trailers,
;;   on_response_headers, on_response_body, on_response_trailers) and
;;   returns that value.
;;
;; What the host is expected to do (ABI reference §11.1)
;;   Headers: 0 Continue; 1 → StopAllIterationAndWatermark (unless
;;   allow_on_headers_stop_iteration); 2 → Continue; 3 StopAllIterationAndBuffer;
;;   4 StopAllIterationAndWatermark; > 4 → StopAllIterationAndWatermark.
;;   Bodies: 0 Continue, 1 StopIterationAndBuffer, 2 StopIterationAndWatermark,
;;   3 StopIterationNoBuffer, > 3 → StopIterationNoBuffer.
;;   Trailers: 0 Continue, 1 StopIteration, > 1 → StopIteration.
;;   Never a trap or a panic for an unexpected value.
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value"
    (func $get_header_map_value (param i32 i32 i32 i32 i32) (result i32)))

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

  (data (i32.const 0x1000) "return_codes: \00")             ;; slot 0: prefix
  (data (i32.const 0x1040) "=\00")
  ;; Header names: slot i at 0x2000 + 0x40 * i; callback names at 0x3000 + 0x40 * i.
  (data (i32.const 0x2000) "x-return-request-headers\00")
  (data (i32.const 0x2040) "x-return-request-body\00")
  (data (i32.const 0x2080) "x-return-request-trailers\00")
  (data (i32.const 0x20C0) "x-return-response-headers\00")
  (data (i32.const 0x2100) "x-return-response-body\00")
  (data (i32.const 0x2140) "x-return-response-trailers\00")
  (data (i32.const 0x3000) "on_request_headers\00")
  (data (i32.const 0x3040) "on_request_body\00")
  (data (i32.const 0x3080) "on_request_trailers\00")
  (data (i32.const 0x30C0) "on_response_headers\00")
  (data (i32.const 0x3100) "on_response_body\00")
  (data (i32.const 0x3140) "on_response_trailers\00")

  ;; Remembered values, 4 bytes each at 0x40 + 4 * i.

  ;; The request header named by the C string at $key, as a decimal u32 (0 if absent/invalid).
  (func $header_u32 (param $key i32) (result i32)
    (local $p i32) (local $n i32) (local $i i32) (local $v i32) (local $c i32)
    (if (call $get_header_map_value (i32.const 0) (local.get $key) (call $strlen (local.get $key))
          (i32.const 0x10) (i32.const 0x14))
      (then (return (i32.const 0))))
    (local.set $p (i32.load (i32.const 0x10)))
    (local.set $n (i32.load (i32.const 0x14)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $c (i32.sub (i32.load8_u (i32.add (local.get $p) (local.get $i))) (i32.const 48)))
        (if (i32.gt_u (local.get $c) (i32.const 9)) (then (return (i32.const 0))))
        (local.set $v (i32.add (i32.mul (local.get $v) (i32.const 10)) (local.get $c)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $v))

  ;; Logs and returns the remembered value $i.
  (func $ret (param $i i32) (result i32)
    (local $v i32)
    (local.set $v (i32.load (i32.add (i32.const 0x40) (i32.shl (local.get $i) (i32.const 2)))))
    (call $report (i32.add (i32.const 0x3000) (i32.shl (local.get $i) (i32.const 6))) (local.get $v))
    (local.get $v))

  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (local $i i32)
    (loop $next
      (i32.store (i32.add (i32.const 0x40) (i32.shl (local.get $i) (i32.const 2)))
        (call $header_u32 (i32.add (i32.const 0x2000) (i32.shl (local.get $i) (i32.const 6)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (i32.const 6))))
    (call $ret (i32.const 0)))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) (call $ret (i32.const 1)))
  (func (export "proxy_on_request_trailers") (param i32 i32) (result i32) (call $ret (i32.const 2)))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (call $ret (i32.const 3)))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32) (call $ret (i32.const 4)))
  (func (export "proxy_on_response_trailers") (param i32 i32) (result i32) (call $ret (i32.const 5)))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32))
)
