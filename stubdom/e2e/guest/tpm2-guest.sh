#!/bin/bash
# stubdom/e2e/guest/tpm2-guest.sh MODE: the e2e guest's TPM 2.0 checks, run by guest/init
# (chroot) in the guest's read-only Debian root (a copy of dom0's: Python, tpm2-tools,
# pvgrub-py installed from the wheel dom0's run built; nothing from the network).
#
# MODE tpm2:     start pvgrub-guest-tpm, read PCR 4/5 with tpm2_pcrread on /dev/tpmrm0,
#                replay the delivered event log with tpm2_eventlog, bind an AK to the EK
#                (dom0's MakeCredential challenge in data/attest-credential) and quote
#                PCR 4/5 with the nonce dom0 writes to data/attest-nonce.
# MODE tpm2hold: the same start, then re-read PCR 4 every 2 s until the TPM fails and,
#                after dom0 restarts vtpmd, answers again.
# MODE tpm2migrate: the same start, an NV index written, then PCR 4/5 and the index every
#                2 s (GUEST-MIGRATE-TICK n <pcr4> <pcr5> <nv>) while dom0 saves, moves the
#                vTPM and restores the guest.
#
# Lines on hvc0 (dom0's scenarios read them from the guest's console log):
#   GUEST-TPM: ...                          progress and errors
#   GUEST-TPM-VERSION <major>               /sys/class/tpm/tpm0/tpm_version_major
#   GUEST-TPMRM0 <seconds>                  uptime when /dev/tpmrm0 answered tpm2_pcrread
#   GUEST-DMESG: <line>                     the kernel's lines for the chip
#   GUEST-PCR <bank> <n> <hex>              tpm2_pcrread's PCR 4 and 5, sha1 and sha256
#   GUEST-EVENTLOG-PCR <bank> <n> <hex>     tpm2_eventlog's replay of the delivered log
#   GUEST-ATTEST <ekpub|ekcert|akpub> <base64>  its EK, EK certificate (NV 0x01c00002), AK
#   GUEST-ATTEST-READY                      waiting for data/attest-nonce and -credential
#   GUEST-ATTEST-SECRET <hex>               what ActivateCredential released
#   GUEST-QUOTE <akpub|message|signature> <base64>
#   GUEST-HOLDING, GUEST-TPM-ERROR after <n>s: ..., GUEST-TPM-BACK after <n>s: ...
set -u
mode=${1:-tpm2}
export PATH=/opt/pvgrub-venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export TPM2TOOLS_TCTI=device:/dev/tpmrm0
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "GUEST-TPM: $*"; }
LOG=/run/pvgrub-py/binary_bios_measurements
mkdir -p /run/pvgrub-py

say "Debian root at uptime $(up)s"
# stubdom/guest-tpm's modprobe configuration is installed in this root's /etc/modprobe.d:
# xen-tpmfront must not take the device.
if modprobe xen-tpmfront 2>/dev/null; then say "xen-tpmfront loaded: the modprobe configuration is missing"
else say "xen-tpmfront refused by modprobe (blacklisted), as configured"; fi
modprobe -a tpm_vtpm_proxy xen-gntalloc xen-evtchn xen-gntdev || say "modprobe failed"
for dev in /dev/vtpmx /dev/xen/gntalloc /dev/xen/evtchn /dev/xen/xenbus; do
  [ -e "$dev" ] || say "missing $dev"
done

t0=$(up)
pvgrub-guest-tpm --ready-file /run/pvgrub-guest-tpm.ready --event-log-out "$LOG" \
  > /run/pvgrub-guest-tpm.log 2>&1 &
daemon=$!
i=0
while [ ! -e /dev/tpmrm0 ] && [ $i -lt 240 ] && kill -0 $daemon 2>/dev/null; do
  sleep 0.5; i=$((i + 1))
done
if [ ! -e /dev/tpmrm0 ]; then
  say "no /dev/tpmrm0: $(tr '\n' '|' < /run/pvgrub-guest-tpm.log | cut -c1-600)"
  exit 1
fi
if tpm2_pcrread sha1:4,5+sha256:4,5 > /run/pcrread.txt 2>&1; then
  echo "GUEST-TPMRM0 $(up) (pvgrub-guest-tpm started at $t0)"
else
  say "tpm2_pcrread failed: $(tr '\n' '|' < /run/pcrread.txt)"
fi
echo "GUEST-TPM-VERSION $(cat /sys/class/tpm/tpm0/tpm_version_major 2>/dev/null || echo none)"
[ -c /dev/tpmrm0 ] && say "/dev/tpmrm0 is a character device"
dmesg | grep -i -E 'tpm|vtpm' | sed 's/^/GUEST-DMESG: /'
sed 's/^/GUEST-DAEMON: /' /run/pvgrub-guest-tpm.log

# tpm2_pcrread prints "  sha1:" then "    4 : 0x<HEX>" lines.
pcr_lines() { # prefix file
  awk -v p="$1" '
    /^ *[a-z0-9_]+: *$/ { bank = $1; sub(":", "", bank); next }
    /^ *[0-9]+ *: *0x[0-9A-Fa-f]+/ { n = $1; v = $3; sub("^0x", "", v); print p, bank, n, tolower(v) }
  ' "$2"
}
pcr_lines GUEST-PCR /run/pcrread.txt

if [ -s "$LOG" ]; then
  if tpm2_eventlog "$LOG" > /run/eventlog.txt 2>&1; then
    # The replay is the "pcrs:" section at the end of tpm2_eventlog's output.
    sed -n '/^pcrs:/,$p' /run/eventlog.txt > /run/eventlog-pcrs.txt
    pcr_lines GUEST-EVENTLOG-PCR /run/eventlog-pcrs.txt | grep -E ' [45] '
    say "event log $LOG: $(stat -c %s "$LOG") bytes, $(grep -c 'EventNum' /run/eventlog.txt) events"
  else
    say "tpm2_eventlog failed: $(tail -3 /run/eventlog.txt | tr '\n' '|')"
  fi
else
  say "no event log at $LOG"
fi

stream_daemon_lines() { # from now on, the daemon's lines reach the console as they come
  tail -n 0 -f /run/pvgrub-guest-tpm.log | sed -u 's/^/GUEST-DAEMON: /' &
}

attest() {
  # The AK is bound to the vTPM's EK (dom0 checks the EK certificate against the vtpmd CA
  # and answers with a MakeCredential challenge), then quotes PCR 4/5 with dom0's nonce.
  # The policy session of ActivateCredential must outlive one tool run: the kernel's
  # resource manager flushes a client's sessions when it closes /dev/tpmrm0, so these
  # steps use /dev/tpm0 directly (tpm2_startauthsession(1)) and flush what they load.
  local nonce="" cred="" i=0 d=/run/attest t0=device:/dev/tpm0
  mkdir -p $d
  { tpm2_createek -T $t0 -c $d/ek.ctx -G rsa -u $d/ek.pub &&
    tpm2_createak -T $t0 -C $d/ek.ctx -c $d/ak.ctx -G rsa -g sha256 -s rsassa -u $d/ak.pub \
      -n $d/ak.name &&
    tpm2_flushcontext -T $t0 -t &&
    tpm2_nvread -T $t0 -C o 0x01c00002 -o $d/ek.crt; } > $d/log 2>&1 ||
    { say "EK/AK failed: $(tail -3 $d/log | tr '\n' '|')"; return 1; }
  echo "GUEST-ATTEST ekpub $(base64 -w0 < $d/ek.pub)"
  echo "GUEST-ATTEST ekcert $(base64 -w0 < $d/ek.crt)"
  echo "GUEST-ATTEST akpub $(base64 -w0 < $d/ak.pub)"
  echo "GUEST-ATTEST-READY"
  while { [ -z "$nonce" ] || [ -z "$cred" ]; } && [ $i -lt 120 ]; do
    nonce=$(xenstore-read data/attest-nonce 2>/dev/null) || nonce=""
    cred=$(xenstore-read data/attest-credential 2>/dev/null) || cred=""
    { [ -n "$nonce" ] && [ -n "$cred" ]; } || { sleep 1; i=$((i + 1)); }
  done
  [ -n "$nonce" ] && [ -n "$cred" ] || { say "no nonce and challenge from dom0 in 120s"; return 1; }
  echo "$cred" | base64 -d > $d/cred
  { tpm2_startauthsession -T $t0 --policy-session -S $d/session.ctx &&
    tpm2_policysecret -T $t0 -S $d/session.ctx -c e &&
    tpm2_activatecredential -T $t0 -c $d/ak.ctx -C $d/ek.ctx -i $d/cred -o $d/secret \
      -P "session:$d/session.ctx"; } >> $d/log 2>&1 ||
    say "activatecredential failed: $(tail -3 $d/log | tr '\n' '|')"
  tpm2_flushcontext -T $t0 $d/session.ctx > /dev/null 2>&1
  tpm2_flushcontext -T $t0 -t > /dev/null 2>&1
  [ -s $d/secret ] && echo "GUEST-ATTEST-SECRET $(od -An -tx1 -v < $d/secret | tr -d ' \n')"
  tpm2_quote -c $d/ak.ctx -l sha256:4,5 -q "$nonce" -m $d/quote.msg -s $d/quote.sig \
      -o $d/quote.pcrs -g sha256 >> $d/log 2>&1 ||
    { say "quote failed: $(tail -3 $d/log | tr '\n' '|')"; return 1; }
  echo "GUEST-QUOTE akpub $(base64 -w0 < $d/ak.pub)"
  echo "GUEST-QUOTE message $(base64 -w0 < $d/quote.msg)"
  echo "GUEST-QUOTE signature $(base64 -w0 < $d/quote.sig)"
}

hold() {
  local t=0 failed="" out
  stream_daemon_lines
  echo "GUEST-HOLDING"
  while [ $t -lt 400 ]; do
    sleep 2; t=$((t + 2))
    if out=$(timeout 90 tpm2_pcrread sha1:4 2>&1); then
      if [ -n "$failed" ]; then
        echo "GUEST-TPM-BACK after ${t}s: $(echo "$out" | tr '\n' ' ' | tr -s ' ')"
        return 0
      fi
    elif [ -z "$failed" ]; then
      failed=$t
      echo "GUEST-TPM-ERROR after ${t}s: $(echo "$out" | tail -2 | tr '\n' '|')"
    fi
  done
  say "hold ended after ${t}s"
}

migrate() {
  # An NV index of the guest's own, then its PCR 4/5 and that index every 2 s: dom0 saves,
  # moves the vTPM and restores the guest in between, and compares the ticks.
  local idx=0x01800010 d=/run/migrate n=0 size out p nv
  mkdir -p $d
  od -An -N16 -tx1 /dev/urandom | tr -d ' \n' > $d/data
  size=$(stat -c %s $d/data)
  { tpm2_nvdefine -C o -s "$size" -a "ownerread|ownerwrite|authread|authwrite" $idx &&
    tpm2_nvwrite -C o -i $d/data $idx; } > $d/log 2>&1 ||
    { say "NV index: $(tail -2 $d/log | tr '\n' '|')"; return 1; }
  echo "GUEST-MIGRATE-NV-WRITTEN $(od -An -tx1 -v < $d/data | tr -d ' \n')"
  stream_daemon_lines
  echo "GUEST-MIGRATE-READY"
  while [ $n -lt 300 ]; do
    n=$((n + 1))
    if out=$(timeout 60 tpm2_pcrread sha256:4,5 2>&1) &&
       timeout 60 tpm2_nvread -C o -s "$size" -o $d/read $idx > /dev/null 2>&1; then
      p=$(echo "$out" | awk '/^ *[45] *: *0x/ {v = $3; sub("^0x", "", v); printf "%s ", tolower(v)}')
      nv=$(od -An -tx1 -v < $d/read | tr -d ' \n')
      echo "GUEST-MIGRATE-TICK $n ${p}$nv"
    else
      echo "GUEST-MIGRATE-TICK $n error: $(echo "$out" | tail -1)"
    fi
    sleep 2
  done
}

case $mode in
  tpm2) attest ;;
  tpm2migrate) migrate ;;
  tpm2hold) hold ;;
esac
tail -20 /run/pvgrub-guest-tpm.log | sed 's/^/GUEST-DAEMON-END: /'
kill $daemon 2>/dev/null
exit 0
