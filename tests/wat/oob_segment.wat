;; Valid, but its data segment lies past the end of its one-page memory, so every
;; instantiation (every call) traps before any method runs.
(module
  (import "cmesh" "output" (func $output (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 65530) "past the end")
  (func (export "run")
    (call $output (i32.const 0) (i32.const 0))))
