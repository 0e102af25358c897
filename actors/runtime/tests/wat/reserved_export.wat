;; Exports a name the runtime's gas metering uses.
(module
  (memory (export "memory") 1)
  (func (export "wasmer_metering_remaining_points")))
