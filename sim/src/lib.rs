//! Deterministic cluster simulator: N members running the real agent over simulated links with faults, checking invariants.
