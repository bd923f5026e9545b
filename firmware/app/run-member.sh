#!/bin/sh
# Cargo runner (see .cargo/config.toml): boots one HA member under QEMU mps2-an385 and decodes
# its defmt log. The QEMU command line is written once, in ha-qemu (qemu/src/lib.rs); this
# script only runs its `ha-qemu-member` binary, built from the main workspace. Wiring (block,
# ports, socket directory) comes from the environment: see qemu/src/bin/ha-qemu-member.rs.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec cargo run --quiet --release --manifest-path "$here/../../Cargo.toml" \
    -p ha-qemu --bin ha-qemu-member -- "$@"
