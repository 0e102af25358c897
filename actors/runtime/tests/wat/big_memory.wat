;; Declares 1025 pages (64 MiB + 64 KiB) of initial memory.
(module
  (memory (export "memory") 1025)
  (func (export "run")))
