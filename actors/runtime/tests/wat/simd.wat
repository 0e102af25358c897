;; Uses SIMD, which is not enabled.
(module
  (memory (export "memory") 1)
  (func (export "run")
    (drop (i32x4.splat (i32.const 1)))))
