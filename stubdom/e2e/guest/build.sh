#!/bin/bash
# stubdom/e2e/guest/build.sh ROOTFS KVER OUTDIR: the e2e guest, without mounting anything.
#
# OUTDIR gets:
#   guest/vmlinuz, guest/initrd.img  the kernel (dom0's Debian kernel) and a busybox
#                                    initramfs (init + xen-tpmfront and its deps)
#   guest/entries                    "<entry> <cmdline>" per menu entry we boot
#                                    (what predict is given; written from the same
#                                    values as grub.cfg, not read back by pvgrub-py)
#   debian-gpt.img                   GPT: p1 BIOS boot, p2 ext4 with /boot/grub/grub.cfg
#                                    (Debian 12's layout), the kernel and the initrd
#   rejected.img                     the same layout, but grub.cfg's kernel is not there
set -euo pipefail

ROOTFS=$1 KVER=$2 OUT=$3
HERE=$(cd "$(dirname "$0")" && pwd)
FS_UUID=2f1c5e4b-8d0a-4c1e-9b7f-3a6d5e4c2b10
MIB=$((1024 * 1024))

mkdir -p "$OUT/guest"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# -- initramfs --------------------------------------------------------------------------
init=$work/initramfs
mkdir -p "$init"/{bin,dev,proc,sys,lib/modules}
cp "$ROOTFS/bin/busybox" "$init/bin/busybox"
install -m 755 "$HERE/init" "$init/init"
mknod -m 600 "$init/dev/console" c 5 1
moddir=$ROOTFS/lib/modules/$KVER
# modules.dep: "mod: dep1 dep2 ..." with dependencies listed so that loading them
# from last to first, then the module itself, satisfies every symbol.  Each list file
# names, in load order, the .ko files one mode of init loads (each written once).
copy_module() { # path-in-moddir list-file
  local m=$1 base
  base=$(basename "$m")
  case $base in
    *.ko) cp "$moddir/$m" "$init/lib/modules/$base" ;;
    *.ko.xz) xz -dc "$moddir/$m" > "$init/lib/modules/${base%.xz}"; base=${base%.xz} ;;
    *.ko.zst) zstd -qdc "$moddir/$m" > "$init/lib/modules/${base%.zst}"; base=${base%.zst} ;;
    *) echo "unexpected module file $m" >&2; exit 1 ;;
  esac
  grep -qx "$base" "$2" 2>/dev/null || echo "$base" >> "$2"
}
modules_into() { # list-file module-name...
  local list=$1 name want mod deps order d
  : > "$list"
  shift
  for name in "$@"; do
    want=$(grep -E "/$name\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | head -1) \
      || { echo "$name is not a module of $KVER" >&2; exit 1; }
    mod=${want%%:*}
    deps=${want#*:}
    order=""
    for d in $deps; do order="$d $order"; done
    for d in $order $mod; do copy_module "$d" "$list"; done
  done
}
# e2e=probe/hold: the kernel's own xen-tpmfront.
modules_into "$init/lib/modules/load-order" xen-tpmfront
# e2e=tpm2*: the block frontend and ext4 for the guest's Debian root on xvdb (read-only:
# the dom0 root filesystem image, with Python, tpm2-tools and pvgrub-py's wheel).  The
# TPM modules (tpm_vtpm_proxy, gntalloc, evtchn, gntdev) load from that root's own
# /lib/modules, through stubdom/guest-tpm's modprobe configuration.
modules_into "$init/lib/modules/load-root" xen-blkfront crc32c_generic ext4
echo "initramfs modules: $(cat "$init/lib/modules/load-order" "$init/lib/modules/load-root" | tr '\n' ' ')"
# Reproducible bytes (fixed mtimes, no gzip name/time), so PCR 5 is the same on every
# run with the same busybox and kernel.
find "$init" -exec touch -h -d @1700000000 {} +
(cd "$init" && find . | LC_ALL=C sort | cpio -o -H newc --quiet --reproducible) |
  gzip -9n > "$OUT/guest/initrd.img"
cp "$ROOTFS/boot/vmlinuz-$KVER" "$OUT/guest/vmlinuz"

# -- the menu, and what each entry's cmdline is -----------------------------------------
sed -e "s/@KVER@/$KVER/g" -e "s/@UUID@/$FS_UUID/g" "$HERE/grub.cfg.in" > "$work/grub.cfg"
{
  echo "default root=UUID=$FS_UUID ro console=hvc0 quiet e2e=probe"
  echo "e2e-hold root=UUID=$FS_UUID ro console=hvc0 quiet e2e=hold"
  echo "e2e-tpm2 root=UUID=$FS_UUID ro console=hvc0 quiet e2e=tpm2"
  echo "e2e-tpm2-hold root=UUID=$FS_UUID ro console=hvc0 quiet e2e=tpm2hold"
  echo "e2e-tpm2-migrate root=UUID=$FS_UUID ro console=hvc0 quiet e2e=tpm2migrate"
} > "$OUT/guest/entries"

# -- disks ------------------------------------------------------------------------------
gpt_disk() { # tree image
  local fs=$work/root.ext4 start
  rm -f "$fs"; truncate -s $((48 * MIB)) "$fs"
  E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -F -t ext4 -L debian-root -U "$FS_UUID" \
    -E "hash_seed=$FS_UUID" -d "$1" "$fs"
  rm -f "$2"; truncate -s $((52 * MIB)) "$2"
  sfdisk -q "$2" <<'EOF'
label: gpt
start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, name="bios"
start=4096, size=98304, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root"
EOF
  start=$(sfdisk -d "$2" | sed -n 's/.*: start= *\([0-9]*\),.*name="root".*/\1/p')
  dd if="$fs" of="$2" bs=512 seek="$start" conv=notrunc,sparse status=none
}

tree=$work/tree
mkdir -p "$tree"/{boot/grub,etc}
cp "$work/grub.cfg" "$tree/boot/grub/grub.cfg"
cp "$OUT/guest/vmlinuz" "$tree/boot/vmlinuz-$KVER"
cp "$OUT/guest/initrd.img" "$tree/boot/initrd.img-$KVER"
echo e2e-guest > "$tree/etc/hostname"
ln -s "boot/vmlinuz-$KVER" "$tree/vmlinuz"
ln -s "boot/initrd.img-$KVER" "$tree/initrd.img"
gpt_disk "$tree" "$OUT/debian-gpt.img"

# A disk pvgrub-py must refuse: its menu's kernel is missing.
rm "$tree/boot/vmlinuz-$KVER" "$tree/vmlinuz"
gpt_disk "$tree" "$OUT/rejected.img"
ls -l "$OUT" "$OUT/guest"
