#!/bin/sh
# Cargo runner (see .cargo/config.toml): boots one HA member under QEMU mps2-an385 and decodes
# its defmt log (raw frames on UART0) with defmt-print. Wiring follows the QEMU member
# contract in docs/firmware.md:
#   HA_MEMBER_CFG        configuration block (4096 bytes, `hactl provision`); without it the
#                        member logs "no configuration block" and does not join
#   (the boot epoch word at 0x3EFFC is loaded from the clock: Unix seconds - 10^9)
#   HA_MEMBER_DIR        directory for host.sock (UART1) and sensors.sock (UART3)
#   HA_BACKUP_PORT       local UDP port of the backup link (UART2), HA_BACKUP_PEER_PORT the wire's
#   HA_MAIN_PORT         local UDP port of the LAN9118 socket,      HA_MAIN_PEER_PORT   the wire's
set -eu
elf="$1"
dir="${HA_MEMBER_DIR:-${TMPDIR:-/tmp}/ha-member}"
mkdir -p "$dir"
set -- -M mps2-an385 -display none -monitor none -nodefaults -kernel "$elf"
if [ -n "${HA_MEMBER_CFG:-}" ]; then
    set -- "$@" -device "loader,file=$HA_MEMBER_CFG,addr=0x3F000,force-raw=on"
fi
# Boot epoch (a real controller's persistent boot counter): grows with every start and never
# equals a main CPU's epoch (Unix seconds).
set -- "$@" -device "loader,addr=0x3EFFC,data=$(( $(date +%s) - 1000000000 )),data-len=4"
set -- "$@" \
    -serial stdio \
    -chardev "socket,id=host,path=$dir/host.sock,server=on,wait=off" -serial chardev:host \
    -serial "udp:127.0.0.1:${HA_BACKUP_PEER_PORT:-45001}@127.0.0.1:${HA_BACKUP_PORT:-45000}" \
    -chardev "socket,id=sens,path=$dir/sensors.sock,server=on,wait=off" -serial chardev:sens \
    -nic "socket,udp=127.0.0.1:${HA_MAIN_PEER_PORT:-45003},localaddr=127.0.0.1:${HA_MAIN_PORT:-45002}"
qemu-system-arm "$@" | defmt-print -e "$elf"
