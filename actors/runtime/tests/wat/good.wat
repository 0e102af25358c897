;; A well-behaved app using every host function of docs/ABI.md.
;; Memory map: 0..256 constant strings, 1024.. the call input, 2048.. and 4096.. scratch.
(module
  (import "cmesh" "input_len" (func $input_len (result i32)))
  (import "cmesh" "input_read" (func $input_read (param i32)))
  (import "cmesh" "output" (func $output (param i32 i32)))
  (import "cmesh" "storage_read" (func $storage_read (param i32) (result i64)))
  (import "cmesh" "storage_write" (func $storage_write (param i32 i32 i32)))
  (import "cmesh" "storage_remove" (func $storage_remove (param i32) (result i32)))
  (import "cmesh" "storage_range" (func $storage_range (param i32 i32 i32) (result i64)))
  (import "cmesh" "register_read" (func $register_read (param i32)))
  (import "cmesh" "emit" (func $emit (param i32 i32 i32 i32)))
  (import "cmesh" "caller" (func $caller (param i32)))
  (import "cmesh" "context" (func $context (param i32)))
  (import "cmesh" "tx_id" (func $tx_id (param i32)))
  (import "cmesh" "time_ms" (func $time_ms (result i64)))
  (import "cmesh" "log" (func $log (param i32 i32)))
  (import "cmesh" "panic" (func $panic (param i32 i32)))

  (memory (export "memory") 2)
  ;; Rust emits these; they must be accepted and ignored.
  (global (export "__data_end") i32 (i32.const 256))
  (global (export "__heap_base") i32 (i32.const 65536))
  (table (export "__indirect_function_table") 1 funcref)

  (data (i32.const 0) "greeting")
  (data (i32.const 16) "hello, log")
  (data (i32.const 32) "boom: something broke")
  (data (i32.const 64) "v1")
  (data (i32.const 80) "bad name!")
  (data (i32.const 96) "{not json")
  (data (i32.const 112) "{}")

  ;; Copies the input to 1024 and returns its length.
  (func $read_input (result i32)
    (call $input_read (i32.const 1024))
    (call $input_len))

  (func (export "echo")
    (local $n i32)
    (local.set $n (call $read_input))
    (call $output (i32.const 1024) (local.get $n)))

  ;; input: key[32] value[..]
  (func (export "put")
    (local $n i32)
    (local.set $n (call $read_input))
    (call $storage_write (i32.const 1024) (i32.const 1056)
      (i32.sub (local.get $n) (i32.const 32))))

  ;; input: key[32]; output: 0 if absent, else 1 followed by the value
  (func (export "get")
    (local $len i64)
    (drop (call $read_input))
    (local.set $len (call $storage_read (i32.const 1024)))
    (if (i64.eq (local.get $len) (i64.const -1))
      (then
        (i32.store8 (i32.const 2048) (i32.const 0))
        (call $output (i32.const 2048) (i32.const 1)))
      (else
        (i32.store8 (i32.const 2048) (i32.const 1))
        (call $register_read (i32.const 2049))
        (call $output (i32.const 2048)
          (i32.add (i32.wrap_i64 (local.get $len)) (i32.const 1))))))

  ;; input: key[32]; output: the byte storage_remove returned
  (func (export "remove")
    (drop (call $read_input))
    (i32.store8 (i32.const 2048) (call $storage_remove (i32.const 1024)))
    (call $output (i32.const 2048) (i32.const 1)))

  ;; input: limit:i32le start[32] [end[32]]; output: the register
  (func (export "range")
    (local $n i32)
    (local $len i64)
    (local.set $n (call $read_input))
    (local.set $len
      (call $storage_range
        (i32.const 1028)
        (if (result i32) (i32.ge_u (local.get $n) (i32.const 68))
          (then (i32.const 1060))
          (else (i32.const -1)))
        (i32.load (i32.const 1024))))
    (call $register_read (i32.const 4096))
    (call $output (i32.const 4096) (i32.wrap_i64 (local.get $len))))

  ;; input: key[32] limit:i32le start[32]; removes key, then ranges from start (no end)
  (func (export "remove_then_range")
    (local $len i64)
    (drop (call $read_input))
    (drop (call $storage_remove (i32.const 1024)))
    (local.set $len
      (call $storage_range (i32.const 1060) (i32.const -1) (i32.load (i32.const 1056))))
    (call $register_read (i32.const 4096))
    (call $output (i32.const 4096) (i32.wrap_i64 (local.get $len))))

  ;; input: key[32] limit:i32le start[32]; sets key to "v1", then ranges from start
  (func (export "put_then_range")
    (local $len i64)
    (drop (call $read_input))
    (call $storage_write (i32.const 1024) (i32.const 64) (i32.const 2))
    (local.set $len
      (call $storage_range (i32.const 1060) (i32.const -1) (i32.load (i32.const 1056))))
    (call $register_read (i32.const 4096))
    (call $output (i32.const 4096) (i32.wrap_i64 (local.get $len))))

  ;; input: key[32]; writes "v1" under it and outputs what a read of it returns
  (func (export "write_then_read")
    (local $len i64)
    (drop (call $read_input))
    (call $storage_write (i32.const 1024) (i32.const 64) (i32.const 2))
    (local.set $len (call $storage_read (i32.const 1024)))
    (call $register_read (i32.const 2048))
    (call $output (i32.const 2048) (i32.wrap_i64 (local.get $len))))

  ;; emits "greeting" with the input as data
  (func (export "emit")
    (local $n i32)
    (local.set $n (call $read_input))
    (call $emit (i32.const 0) (i32.const 8) (i32.const 1024) (local.get $n)))

  (func (export "emit_bad_name")
    (call $emit (i32.const 80) (i32.const 9) (i32.const 112) (i32.const 2)))

  (func (export "emit_bad_json")
    (call $emit (i32.const 0) (i32.const 8) (i32.const 96) (i32.const 9)))

  ;; output: caller[20] context[32] tx_id[32] time_ms:i64le
  (func (export "env")
    (call $caller (i32.const 2048))
    (call $context (i32.const 2068))
    (call $tx_id (i32.const 2100))
    (i64.store (i32.const 2132) (call $time_ms))
    (call $output (i32.const 2048) (i32.const 92)))

  (func (export "log")
    (call $log (i32.const 16) (i32.const 10)))

  (func (export "log_many")
    (local $i i32)
    (loop $again
      (call $log (i32.const 16) (i32.const 10))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 40)))))

  (func (export "log_long")
    (memory.fill (i32.const 2048) (i32.const 97) (i32.const 2000))
    (call $log (i32.const 2048) (i32.const 2000)))

  (func (export "panic")
    (call $panic (i32.const 32) (i32.const 21)))

  ;; sets a key and an event, then panics: none of it may survive
  (func (export "set_then_panic")
    (call $storage_write (i32.const 0) (i32.const 64) (i32.const 2))
    (call $emit (i32.const 0) (i32.const 8) (i32.const 112) (i32.const 2))
    (call $panic (i32.const 32) (i32.const 4)))

  (func (export "output_oob")
    (call $output (i32.const 131000) (i32.const 1000)))

  (func (export "key_oob")
    (drop (call $storage_read (i32.const -1))))

  (func (export "write_oob")
    (call $storage_write (i32.const 0) (i32.const 131070) (i32.const 10)))

  (func (export "big_result")
    (drop (memory.grow (i32.const 32)))
    (call $output (i32.const 0) (i32.const 1048577)))

  (func (export "max_result")
    (drop (memory.grow (i32.const 16)))
    (call $output (i32.const 0) (i32.const 1048576)))

  (func (export "big_value")
    (drop (memory.grow (i32.const 32)))
    (call $storage_write (i32.const 0) (i32.const 64) (i32.const 1048577)))

  (func (export "view_remove")
    (drop (call $storage_remove (i32.const 0))))

  ;; input: f32 bits x, f32 bits y; output: bits of x + 0.0 and of (y*0) / (y*0)
  (func (export "nan32")
    (drop (call $read_input))
    (f32.store (i32.const 2048)
      (f32.add (f32.load (i32.const 1024)) (f32.const 0)))
    (f32.store (i32.const 2052)
      (f32.div
        (f32.mul (f32.load (i32.const 1028)) (f32.const 0))
        (f32.mul (f32.load (i32.const 1028)) (f32.const 0))))
    (call $output (i32.const 2048) (i32.const 8)))

  ;; the same with f64
  (func (export "nan64")
    (drop (call $read_input))
    (f64.store (i32.const 2048)
      (f64.add (f64.load (i32.const 1024)) (f64.const 0)))
    (f64.store (i32.const 2056)
      (f64.div
        (f64.mul (f64.load (i32.const 1032)) (f64.const 0))
        (f64.mul (f64.load (i32.const 1032)) (f64.const 0))))
    (call $output (i32.const 2048) (i32.const 16)))

  (func (export "noop"))

  (func (export "_hidden"))
)
