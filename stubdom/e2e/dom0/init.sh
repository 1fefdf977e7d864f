#!/bin/bash
# PID 1 of the e2e dom0 (installed as /usr/local/sbin/pvgrub-e2e-init by run.sh).
#
# Brings up what a Debian Xen dom0 has after boot (the /proc/xen and /dev/xen
# drivers, blkback and loop for the guests' disks, xenstored and xenconsoled),
# runs /root/e2e/scenarios.sh under a time bound, and powers the machine off.
# The console (hvc0, relayed by Xen to QEMU's serial port) gets only the stage
# markers and the scenario lines; everything else goes to /var/log/pvgrub-e2e/.
set -uo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8
LOGDIR=/var/log/pvgrub-e2e
SCENARIO_BOUND=${SCENARIO_BOUND:-2100}

mark() { echo "E2E-STAGE $1 uptime=$(cut -d' ' -f1 /proc/uptime)"; }

mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mountpoint -q /dev/pts || mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -o remount,rw /
mkdir -p /run/lock /run/xen /var/log/xen/console /var/lib/xen "$LOGDIR"
rm -rf "${LOGDIR:?}"/*
hostname dom0
mark dom0-userspace

{
  echo "hypervisor: $(cat /sys/hypervisor/type 2>/dev/null) $(cat /sys/hypervisor/version/major 2>/dev/null).$(cat /sys/hypervisor/version/minor 2>/dev/null)"
  for m in xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xen-blkback loop; do
    modprobe "$m" || echo "modprobe $m failed"
  done
  mountpoint -q /proc/xen || mount -t xenfs xenfs /proc/xen
  /etc/init.d/xen start
  ps -e -o pid,cmd | grep -E 'xenstore|xenconsole' | grep -v grep
} > "$LOGDIR/dom0-setup.log" 2>&1
mark xen-daemons

exec 3>&1  # scenarios.sh writes its markers to fd 3: the console
timeout -k 10 "$SCENARIO_BOUND" /root/e2e/scenarios.sh > "$LOGDIR/scenarios-output.log" 2>&1
rc=$?
[ $rc = 124 ] && echo "E2E-SCENARIO: FAIL - harness: scenarios.sh exceeded ${SCENARIO_BOUND}s" \
  && echo "FAIL - harness: scenarios.sh exceeded ${SCENARIO_BOUND}s" >> "$LOGDIR/scenarios.log"
cp /var/log/xen/*.log /var/log/xen/console/*.log "$LOGDIR/" 2>/dev/null
free -m > "$LOGDIR/free.txt"
mark "done"
echo "E2E-DOM0: done rc=$rc"
sync
mount -o remount,ro / 2>/dev/null
sync
/bin/busybox poweroff -f
