#!/bin/bash
# stubdom/e2e/run.sh: pvgrub-py on a real Xen 4.17 hypervisor, nested under QEMU.
#
#   1. rootfs   a Debian bookworm dom0 root filesystem (debootstrap: Xen 4.17,
#               the Debian kernel, python3, swtpm, libxen-dev + gcc for our
#               cffi bindings); cached
#   2. project  a virtual environment in dom0 (/opt/pvgrub-venv: Debian's python3
#               refuses a system-wide pip install, PEP 668) with our Python
#               dependencies from PyPI (cached per setup.py), then this checkout
#               installed into it (the cffi extension compiled inside the chroot
#               against its own libxen-dev); pvgrub-py, pvgrubctl and pytest are
#               linked into /usr/local/bin, where libxl and the scenarios find them
#   3. payload  the guest: the Debian kernel, a busybox initrd (guest/init),
#               a Debian-style GPT/ext4 disk with grub.cfg, a disk pvgrub-py
#               must reject; the dom0 scripts and xl configs (xl/*.cfg); and the
#               TPM 2.0 guests' read-only Debian root (guest-root.img: this root
#               filesystem, so Python, tpm2-tools and the wheel of this checkout;
#               QEMU's second disk, /dev/vdb in dom0, xvdb in the guests)
#   4. image    the dom0 disk image (mke2fs -d, nothing mounted)
#   5. boot     Xen under qemu-system-x86_64 (TCG); dom0 runs dom0/scenarios.sh
#   6. collect  the scenario log and dom0's logs, read back out of the image
#
# Result: out/scenarios.log (one PASS/FAIL/SKIP line per scenario), out/timings.log,
# out/console.log (the serial console), out/dom0-logs/ (bootloader, vtpmd, guest
# consoles).  Exit 0: every scenario passed or was skipped for a stated reason;
# 1: a scenario failed or the boot went wrong; 2: set-up failed; 77: cannot run
# on this host (why is printed; under CI=true that is exit 1, not a skip).
#
# Knobs (environment):
#   E2E_CACHE      downloads and images (default ~/.cache/pvgrub-py/nested-xen)
#   E2E_OUT        logs (default stubdom/e2e/out)
#   E2E_REBUILD=1  throw the cached root filesystem away first (a from-scratch run)
#   E2E_STAGES     stages to run, default "rootfs project payload image boot collect"
#   E2E_ACCEL      tcg (default: this machine kind's KVM cannot run Xen) or kvm
#   E2E_CPU        default qemu64,+svm,+npt (plain "max" crashes dom0, "EPYC" panics Xen)
#   E2E_MEM        QEMU memory in MiB (2048); dom0 gets 1024M of it
#   E2E_BOOT_TIMEOUT  bound on the QEMU run in seconds (2400)
#   E2E_BOOT_STALL    seconds dom0 may take to reach userspace before the boot counts
#                  as hung and is tried once more on a fresh image (300)
#   E2E_ONLY       space-separated scenario ids for dom0 to run (default: all); 7c and
#                  7e come from 7a's guest, F1c from F1b's
#   E2E_NEED_MIB   free space required under E2E_CACHE (4096)
#   MIRROR, SECURITY  Debian mirrors (default: the host's apt sources)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${E2E_CACHE:-${HOME:-/root}/.cache/pvgrub-py/nested-xen}
OUT=${E2E_OUT:-$HERE/out}
STAGES=${E2E_STAGES:-rootfs project payload image boot collect}
ACCEL=${E2E_ACCEL:-tcg}
CPU=${E2E_CPU:-qemu64,+svm,+npt}
MEM=${E2E_MEM:-2048}
SMP=${E2E_SMP:-2}
DOM0_MEM=${E2E_DOM0_MEM:-1024M}
BOOT_TIMEOUT=${E2E_BOOT_TIMEOUT:-2400}
BOOT_STALL=${E2E_BOOT_STALL:-300}
ONLY=${E2E_ONLY:-}
#: The scenario ids dom0/scenarios.sh runs, in order.
ALL_SCENARIOS="1 2 2b 3a 3b 4 4b 5 7a 7b 7c 7d 7e F1 F1b F1c M1 M1b F2 6"
SUITE=bookworm

ROOTFS=$CACHE/rootfs
WORK=$CACHE/work
T0=$(date +%s)
TSTAGE=$T0

say() { echo "[e2e $(date +%H:%M:%S) +$(($(date +%s) - T0))s] $*"; }
die() { say "ERROR: $*" >&2; exit 2; }
skip() {
  say "SKIP: $*"
  mkdir -p "$OUT" && echo "SKIP all: $*" > "$OUT/scenarios.log"
  if [ "${CI:-}" = true ]; then say "CI=true: a skip where the harness must run is a failure"; exit 1; fi
  exit 77
}
stage_done() { # name
  local now; now=$(date +%s)
  printf '%-8s %5ss\n' "$1" "$((now - TSTAGE))" >> "$OUT/timings.log"
  say "stage $1 done in $((now - TSTAGE))s"
  TSTAGE=$now
}
want() { case " $STAGES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# -- 0. can this host run it at all? ------------------------------------------------------
[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, chroot)"
mkdir -p "$CACHE" "$WORK" "$OUT"
rm -f "$OUT/timings.log" "$OUT/scenarios.log" "$OUT/result"

# The root filesystem (~0.7 GiB), the dom0 image (1.7 GiB) and the guest disks need
# room; say so up front rather than fail half-way through an image build.
NEED_MIB=${E2E_NEED_MIB:-4096}
free_mib=$(df -Pm "$CACHE" | awk 'NR == 2 {print $4}')
if [ -n "$free_mib" ] && [ "$free_mib" -lt "$NEED_MIB" ]; then
  skip "only $free_mib MiB free under $CACHE; the harness needs $NEED_MIB MiB (E2E_NEED_MIB)"
fi

host_tools() {
  local need="" p
  for p in qemu-system-x86:qemu-system-x86_64 debootstrap:debootstrap e2fsprogs:mke2fs \
           fdisk:sfdisk cpio:cpio gzip:gzip; do
    command -v "${p#*:}" >/dev/null 2>&1 || need="$need ${p%%:*}"
  done
  if [ -n "$need" ]; then
    say "installing host packages:$need"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    if ! { timeout 300 apt-get update -q >/dev/null &&
           timeout 900 apt-get install -y -q --no-install-recommends $need >/dev/null; }; then
      skip "cannot install$need"
    fi
  fi
}
host_tools
qemu-system-x86_64 -accel help 2>/dev/null | grep -qx "$ACCEL" || skip "QEMU has no $ACCEL accelerator"

apt_uris() {
  { grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
    grep -h '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}'
  } | grep -i debian || true
}
MIRROR=${MIRROR:-$(apt_uris | grep -v -- -security | head -1)}
SECURITY=${SECURITY-$(apt_uris | grep -- -security | head -1)}

# -- 1. rootfs (cached) ---------------------------------------------------------------------
# Everything the dom0 needs from Debian.  gcc, python3-dev and libxen-dev are there to
# build our cffi extension inside the chroot, against the very libraries dom0 loads.
# debootstrap resolves no virtual packages (python3-pycparser needs python3-ply-lex-3.10,
# which only python3-ply provides), so it gets the base and apt-get the rest.
DEB_INCLUDE="xen-utils-4.17,xenstore-utils,linux-image-amd64,kmod,busybox-static,procps"
APT_INSTALL="xen-hypervisor-4.17-amd64 linux-image-amd64 python3 python3-pip python3-setuptools \
python3-wheel python3-cffi python3-dev gcc libc6-dev libxen-dev pkg-config swtpm swtpm-tools"
ROOTFS_KEY="v2 $SUITE $DEB_INCLUDE $APT_INSTALL"
EXTRA_INSTALL="tpm2-tools libtss2-dev"
EXTRA_KEY="v1 $EXTRA_INSTALL"

in_chroot() { # timeout script
  local t=$1; shift
  timeout "$t" chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/e2e-host-ca.crt /bin/sh -c "$@"
}

host_ca_into_chroot() {
  # pip in the chroot trusts what the host trusts: a host behind a TLS-inspecting
  # proxy has that proxy's CA in its own bundle, not in the chroot's.
  local ca=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
  if [ -r "$ca" ]; then cp "$ca" "$ROOTFS/etc/ssl/e2e-host-ca.crt"
  else cp "$ROOTFS/etc/ssl/certs/ca-certificates.crt" "$ROOTFS/etc/ssl/e2e-host-ca.crt"; fi
}

safe_rm_rootfs() {
  # debootstrap mounts proc/sys inside the target; never rm -rf through a mount.
  if [ -d "$ROOTFS" ] && awk '{print $2}' /proc/mounts | grep -q "^$ROOTFS/"; then
    die "something is mounted under $ROOTFS; unmount it first"
  fi
  rm -rf "$ROOTFS" "$CACHE"/.stamp-*
}

stage_rootfs() {
  [ "${E2E_REBUILD:-0}" = 1 ] && safe_rm_rootfs
  if [ "$(cat "$CACHE/.stamp-rootfs" 2>/dev/null)" != "$ROOTFS_KEY" ]; then
    [ -n "$MIRROR" ] || die "no Debian mirror in the host's apt sources; set MIRROR"
    safe_rm_rootfs
    say "debootstrap $SUITE from $MIRROR (log: $OUT/debootstrap.log)"
    mkdir -p "$CACHE/debs"
    timeout 1500 debootstrap --variant=minbase --include="$DEB_INCLUDE" --cache-dir="$CACHE/debs" \
      "$SUITE" "$ROOTFS" "$MIRROR" > "$OUT/debootstrap.log" 2>&1 \
      || { tail -20 "$OUT/debootstrap.log"; die "debootstrap failed"; }
    {
      echo "deb $MIRROR $SUITE main"
      echo "deb $MIRROR $SUITE-updates main"
      if [ -n "$SECURITY" ]; then echo "deb $SECURITY $SUITE-security main"; fi
    } > "$ROOTFS/etc/apt/sources.list"
    printf '#!/bin/sh\nexit 101\n' > "$ROOTFS/usr/sbin/policy-rc.d"
    chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"
    # A small dom0 initramfs: only what finds the virtio root disk (6.5 MB, not 36 MB).
    sed -i 's/^MODULES=.*/MODULES=list/' "$ROOTFS/etc/initramfs-tools/initramfs.conf"
    printf 'virtio_pci\nvirtio_blk\ncrc32c_generic\next4\n' >> "$ROOTFS/etc/initramfs-tools/modules"
    say "chroot: upgrade, hypervisor, initramfs (log: $OUT/chroot.log)"
    in_chroot 1500 '
      set -e
      apt-get update -q
      apt-get -y -q upgrade
      apt-get -y -q install --no-install-recommends '"$APT_INSTALL"'
      cur=$(dpkg-query -W -f="\${Depends}" linux-image-amd64 | sed -n "s/.*\(linux-image-[0-9][^ ,]*\).*/\1/p")
      old=$(dpkg-query -W -f="\${Package}\n" "linux-image-[0-9]*" | grep -v "^$cur\$" || true)
      [ -z "$old" ] || apt-get -y -q purge $old
      update-initramfs -u -k all
      apt-get clean
      rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* /usr/share/locale/*
    ' > "$OUT/chroot.log" 2>&1 || { tail -20 "$OUT/chroot.log"; die "rootfs configuration failed"; }
    echo "$ROOTFS_KEY" > "$CACHE/.stamp-rootfs"
    rm -f "$CACHE/.stamp-pydeps" "$CACHE/.stamp-extras"
  fi
  # Packages added after the base (its own stamp, so adding one does not re-run
  # debootstrap): tpm2-tools for the guests' TPM 2.0 checks and dom0's quote oracle,
  # libtss2-dev to build tpm2-pytss (the attest extra: dom0's attest challenge).
  if [ "$(cat "$CACHE/.stamp-extras" 2>/dev/null)" != "$EXTRA_KEY" ]; then
    say "chroot: extra packages: $EXTRA_INSTALL (log: $OUT/chroot-extras.log)"
    in_chroot 900 '
      set -e
      apt-get update -q
      apt-get -y -q install --no-install-recommends '"$EXTRA_INSTALL"'
      apt-get clean
      rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*
    ' > "$OUT/chroot-extras.log" 2>&1 || { tail -20 "$OUT/chroot-extras.log"; die "extra packages failed"; }
    echo "$EXTRA_KEY" > "$CACHE/.stamp-extras"
  fi
  stage_done rootfs
}

# -- 2. project -------------------------------------------------------------------------------
copy_checkout() {
  # The files git knows about (tracked and untracked-but-not-ignored): the working
  # tree as a developer has it, without build outputs, caches or this harness's out/.
  rm -rf "$ROOTFS/opt/pvgrub-py"
  mkdir -p "$ROOTFS/opt/pvgrub-py"
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
     while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
     tar --null -T - -cf -) | tar -C "$ROOTFS/opt/pvgrub-py" -xf -
}

stage_project() {
  [ -e "$CACHE/.stamp-rootfs" ] || die "no root filesystem yet: run the rootfs stage"
  copy_checkout
  # Dependencies from PyPI once per setup.py, into a venv (never --break-system-packages);
  # --system-site-packages lends it Debian's pip, setuptools, wheel and cffi, so the
  # rootfs needs no python3-venv and the project builds without an isolated build env.
  local deps_key; deps_key="venv attest pytest hypothesis $(sha256sum "$REPO/setup.py" | cut -d' ' -f1)"
  if [ "$(cat "$CACHE/.stamp-pydeps" 2>/dev/null)" != "$deps_key" ]; then
    host_ca_into_chroot
    say "pip: pvgrub-py's dependencies into dom0's /opt/pvgrub-venv (log: $OUT/pip.log)"
    in_chroot 900 'set -e
      rm -rf /opt/pvgrub-venv
      python3 -m venv --without-pip --system-site-packages /opt/pvgrub-venv
      /opt/pvgrub-venv/bin/python3 -m pip install -q --no-cache-dir "/opt/pvgrub-py[attest]" pytest hypothesis' \
      > "$OUT/pip.log" 2>&1 || { tail -20 "$OUT/pip.log"; die "pip install (with dependencies) failed"; }
    echo "$deps_key" > "$CACHE/.stamp-pydeps"
  fi
  say "pip: a wheel of this checkout, its cffi bindings built against the chroot's libxen-dev, into dom0's venv"
  # The same wheel is what the guests run: their root is a copy of this one.
  in_chroot 900 'set -e
    cd /opt/pvgrub-py
    rm -rf /opt/pvgrub-wheels
    /opt/pvgrub-venv/bin/python3 -m pip wheel -q --no-cache-dir --no-deps --no-build-isolation \
      -w /opt/pvgrub-wheels .
    /opt/pvgrub-venv/bin/python3 -m pip install -q --no-index --no-deps --force-reinstall \
      /opt/pvgrub-wheels/pvgrub_py-*.whl
    rm -rf build *.egg-info
    ls /opt/pvgrub-wheels
    for tool in pvgrub-py pvgrubctl pvgrub-guest-tpm pytest; do
      if [ -e /opt/pvgrub-venv/bin/$tool ]; then ln -sf /opt/pvgrub-venv/bin/$tool /usr/local/bin/$tool; fi
    done
    cd /
    /opt/pvgrub-venv/bin/python3 -c "import pvgrub_py._xen_cffi"
    command -v pvgrub-py pvgrubctl pytest' > "$OUT/pip-project.log" 2>&1 \
    || { tail -20 "$OUT/pip-project.log"; die "pip install of the checkout failed"; }
  stage_done project
}

# -- 3. payload -----------------------------------------------------------------------------
kernel_version() {
  local k
  k=$(cd "$ROOTFS/boot" && ls vmlinuz-* 2>/dev/null | sed 's/^vmlinuz-//' | sort -V | tail -1)
  [ -n "$k" ] || die "no kernel in $ROOTFS/boot"
  echo "$k"
}

guest_root() {
  # The TPM 2.0 guests' root (xvdb, read-only; QEMU's second disk, /dev/vdb in dom0):
  # this root filesystem as it is now, without dom0's scenario files, with the guest
  # vTPM daemon's modprobe configuration in place (xen-tpmfront blacklisted; harmless
  # in dom0, which shares the file).
  local conf=$REPO/stubdom/guest-tpm/pvgrub-guest-tpm.conf sz
  if [ -e "$conf" ]; then
    install -m 644 "$conf" "$ROOTFS/etc/modprobe.d/pvgrub-guest-tpm.conf"
  fi
  sz=$(du -sm "$ROOTFS" | cut -f1); sz=$((sz + 256))
  rm -f "$WORK/guest-root.img"
  mke2fs -q -F -t ext4 -L e2e-guest-root -d "$ROOTFS" "$WORK/guest-root.img" "${sz}M" \
    || die "mke2fs -d of the guest root image failed"
  say "guest root image ${sz} MiB"
}

stage_payload() {
  local kver; kver=$(kernel_version)
  local p=$WORK/payload
  rm -rf "$p"; mkdir -p "$p"
  say "guest initrd and disks for kernel $kver"
  "$HERE/guest/build.sh" "$ROOTFS" "$kver" "$p" > "$OUT/payload.log" 2>&1 \
    || { tail -20 "$OUT/payload.log"; die "guest payload build failed"; }
  # What dom0 gets under /root/e2e: the scripts, the xl configs, the guest disks and
  # the files they were made from (predict reads those, not the disk).
  local d=$ROOTFS/root/e2e
  rm -rf "$d"
  guest_root
  mkdir -p "$d"
  cp -a "$HERE/dom0/." "$d/"
  cp -a "$HERE/xl" "$d/xl"
  cp -a "$p/." "$d/"
  echo "$ONLY" > "$d/only"
  install -m 755 "$HERE/dom0/init.sh" "$ROOTFS/usr/local/sbin/pvgrub-e2e-init"
  cat > "$ROOTFS/etc/default/xen" <<'EOF'
XENCONSOLED_ARGS="--log=guest --log-dir=/var/log/xen/console"
EOF
  stage_done payload
}

# -- 4. dom0 disk image -----------------------------------------------------------------------
stage_image() {
  local kver sz
  kver=$(kernel_version)
  [ -e "$ROOTFS/boot/xen-4.17-amd64.gz" ] || die "no /boot/xen-4.17-amd64.gz in the rootfs"
  # QEMU's multiboot loader wants the 32-bit ELF, not the .gz.
  gunzip -c "$ROOTFS/boot/xen-4.17-amd64.gz" > "$WORK/xen.elf"
  cp "$ROOTFS/boot/vmlinuz-$kver" "$WORK/dom0-vmlinuz"
  cp "$ROOTFS/boot/initrd.img-$kver" "$WORK/dom0-initrd.img"
  sz=$(du -sm "$ROOTFS" | cut -f1); sz=$((sz + 768))
  rm -f "$WORK/dom0.img"
  mke2fs -q -F -t ext4 -L e2e-dom0 -d "$ROOTFS" "$WORK/dom0.img" "${sz}M" \
    || die "mke2fs -d of the dom0 image failed"
  say "dom0 image ${sz} MiB"
  stage_done image
}

# -- 5. boot ------------------------------------------------------------------------------------
QPID=""
stop_qemu() {
  if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then kill "$QPID" 2>/dev/null || true; fi
  if [ -n "$QPID" ]; then wait "$QPID" 2>/dev/null || true; fi
  QPID=""
}
trap stop_qemu EXIT INT TERM

BOOT_SEEN=""
boot_once() {
  local log=$OUT/console.log
  local xen_cmd="dom0_mem=$DOM0_MEM,max:$DOM0_MEM dom0_max_vcpus=$SMP console=com1 com1=115200,8n1 \
loglvl=all guest_loglvl=all noreboot"
  local dom0_cmd="root=/dev/vda rw console=hvc0 earlyprintk=xen init=/usr/local/sbin/pvgrub-e2e-init"
  # Multiboot modules are comma separated: a comma inside one's arguments is doubled.
  local mods="$WORK/dom0-vmlinuz ${dom0_cmd//,/,,},$WORK/dom0-initrd.img"
  say "booting Xen: qemu accel=$ACCEL cpu=$CPU mem=${MEM}M smp=$SMP, bound ${BOOT_TIMEOUT}s (console: $log)"
  : > "$log"  # truncated before QEMU starts, so a stale result is never read
  timeout "$BOOT_TIMEOUT" qemu-system-x86_64 -accel "$ACCEL" -cpu "$CPU" -m "$MEM" -smp "$SMP" \
    -nographic -no-reboot -net none \
    -kernel "$WORK/xen.elf" -append "$xen_cmd" -initrd "$mods" \
    -drive file="$WORK/dom0.img",format=raw,if=virtio \
    -drive file="$WORK/guest-root.img",format=raw,if=virtio,readonly=on < /dev/null > "$log" 2>&1 &
  QPID=$!
  local done_re='E2E-DOM0: done' bad_re='\(XEN\) Panic|Kernel panic|Dom0 crashed|Hardware Dom0 shutdown|Unable to mount root'
  local seen="" last="" started; started=$(date +%s)
  while kill -0 "$QPID" 2>/dev/null; do
    if grep -a -q -E "$done_re" "$log"; then seen="done"; break; fi
    if grep -a -q -E "$bad_re" "$log"; then seen=crash; break; fi
    # dom0 reaches userspace in 10-40 s; a TCG boot that has not in BOOT_STALL seconds
    # has hung (seen once: dom0 stopped at "Initialising balloon driver", QEMU idle).
    if [ $(($(date +%s) - started)) -gt "$BOOT_STALL" ] &&
       ! grep -a -q 'E2E-STAGE dom0-userspace' "$log"; then seen=stalled; break; fi
    # progress: echo each new stage marker once
    local m; m=$(grep -a -o 'E2E-STAGE [^ ]*' "$log" | tail -1 || true)
    if [ -n "$m" ] && [ "$m" != "$last" ]; then say "dom0: $m"; last=$m; fi
    sleep 2
  done
  # dom0 powers itself off after "done"; give it a moment, then make sure.
  for _ in $(seq 1 20); do kill -0 "$QPID" 2>/dev/null || break; sleep 1; done
  stop_qemu
  # QEMU may have exited between two looks at the log (dom0 powers off right after
  # "done"): look once more.
  if [ -z "$seen" ]; then
    if grep -a -q -E "$done_re" "$log"; then seen="done"
    elif grep -a -q -E "$bad_re" "$log"; then seen=crash; fi
  fi
  case $seen in
    "done") say "dom0 finished its scenarios" ;;
    stalled) say "dom0 did not reach userspace within ${BOOT_STALL}s: a hung boot"; tail -3 "$log" ;;
    crash) say "a crash on the console:"; grep -a -E "$bad_re" "$log" | head -5 ;;
    *) say "QEMU ended before dom0 finished (timeout ${BOOT_TIMEOUT}s?)"; tail -30 "$log" ;;
  esac
  BOOT_SEEN=$seen
  [ "$seen" = "done" ]
}

stage_boot() {
  local attempt
  for attempt in 1 2; do
    boot_once && { stage_done boot; return 0; }
    [ "$BOOT_SEEN" = stalled ] && [ $attempt = 1 ] || break
    say "booting again, on a fresh dom0 image"
    stage_image
  done
  stage_done boot
  return 1
}

# -- 6. collect ----------------------------------------------------------------------------------
stage_collect() {
  rm -rf "$OUT/dom0-logs"; mkdir -p "$OUT/dom0-logs"
  # The image is no longer in use: read dom0's logs straight out of it.
  if debugfs -R "rdump /var/log/pvgrub-e2e $OUT/dom0-logs" "$WORK/dom0.img" > /dev/null 2>&1 &&
     [ -s "$OUT/dom0-logs/pvgrub-e2e/scenarios.log" ]; then
    cp "$OUT/dom0-logs/pvgrub-e2e/scenarios.log" "$OUT/scenarios.log"
  else
    # Fall back to the console copy of each line.
    grep -a '^E2E-SCENARIO: ' "$OUT/console.log" | sed 's/^E2E-SCENARIO: //; s/\r$//' > "$OUT/scenarios.log" || true
  fi
  stage_done collect
}

rc=0
want rootfs && stage_rootfs
want project && stage_project
want payload && stage_payload
want image && stage_image
if want boot; then stage_boot || rc=1; fi
want collect && stage_collect

if [ -s "$OUT/scenarios.log" ]; then
  echo "================ scenarios ($OUT/scenarios.log) ================"
  cat "$OUT/scenarios.log"
  grep -q '^FAIL' "$OUT/scenarios.log" && rc=1
  grep -q '^PASS' "$OUT/scenarios.log" || rc=1
  # Every scenario dom0 was asked to run must have reported PASS.
  for id in ${ONLY:-$ALL_SCENARIOS}; do
    if ! grep -q "^PASS $id " "$OUT/scenarios.log"; then
      say "scenario $id did not pass"; rc=1
    fi
  done
elif want boot; then
  say "no scenario log"; rc=1
fi
printf '%-8s %5ss\n' total "$(($(date +%s) - T0))" >> "$OUT/timings.log"
echo "================ timings ================"; cat "$OUT/timings.log"
if [ $rc = 0 ]; then echo PASS > "$OUT/result"; say "PASS"; else echo FAIL > "$OUT/result"; say "FAIL"; fi
exit $rc
