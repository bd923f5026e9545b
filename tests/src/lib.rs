//! End-to-end tests: QEMU clusters and network-namespace TCP survival.
