//! Boots management-controller members under QEMU mps2-an385 and owns their processes.
