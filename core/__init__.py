"""Pure core: instruments, the clock, risk, costs and the exit-policy arithmetic. No I/O."""
