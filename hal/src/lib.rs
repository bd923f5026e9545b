//! Traits for what the HA agent observes and drives: disks, TPM, PSUs, fans, modules, status LED, HA link and host link.
#![no_std]
