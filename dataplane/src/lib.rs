//! Main-CPU dataplane: connection table, sans-IO state-sync engine, activation on swap.
