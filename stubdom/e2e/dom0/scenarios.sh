#!/bin/bash
# The e2e scenarios, run in the nested dom0 by init.sh; every wait is bounded.
#
# Each scenario appends one line to /var/log/pvgrub-e2e/scenarios.log and to the
# console (fd 3): "PASS|FAIL|SKIP <id> <name>: <detail>".  Its working files (xl
# output, bootloader logs, guest console, predict output) stay in that directory.
set -uo pipefail
E2E=/root/e2e
LOGDIR=/var/log/pvgrub-e2e
SCEN=$LOGDIR/scenarios.log
CONSOLE=/var/log/xen/console
VTPMD_PID=""
ONLY=$(cat "$E2E/only" 2>/dev/null || true)

# The vTPM instances: ...5a61 (measured-tpm12.cfg), ...5a62 (measured-tpm2.cfg),
# ...5a63 (hold.cfg), and this one for pvgrubctl boot, which has no xl config.
UUID_BUILDER=6c1e2f3a-0b4d-4e5f-8a9b-1c2d3e4f5a64

console() { echo "$*" >&3 2>/dev/null || true; }
stage() { console "E2E-STAGE $1 uptime=$(cut -d' ' -f1 /proc/uptime)"; echo "===== $1 ($(date +%T))"; }
result() { # status id name detail...
  local status=$1 id=$2 name=$3; shift 3
  local line="$status $id $name: $*"
  echo "$line" >> "$SCEN"
  console "E2E-SCENARIO: $line"
  echo ">>> $line"
}
selected() { [ -z "$ONLY" ] || case " $ONLY " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
entry_cmdline() { sed -n "s/^$1 //p" "$E2E/guest/entries"; }

# -- domains and guests -----------------------------------------------------------------
domains_left() { xl list 2>/dev/null | awk 'NR > 1 && $1 != "Domain-0" {print $1}' | tr '\n' ' '; }
gone() { # name timeout: wait until the domain has gone
  local i=0
  while xl domid "$1" > /dev/null 2>&1; do
    [ $i -ge "$2" ] && return 1
    sleep 1; i=$((i + 1))
  done
}
destroy() { xl destroy "$1" > /dev/null 2>&1 || true; gone "$1" 30 || true; }
wait_console() { # name regex timeout: the guest's console log has a line matching regex
  local log=$CONSOLE/guest-$1.log i=0
  while ! grep -a -q -E "$2" "$log" 2>/dev/null; do
    [ $i -ge "$3" ] && return 1
    sleep 1; i=$((i + 1))
  done
}
guest_line() { grep -a -E "$2" "$CONSOLE/guest-$1.log" 2>/dev/null | head -1 | tr -d '\r'; }
create() { # cfg name: xl create, bounded; output in $LOGDIR/xl-create-<name>.log
  local t0 rc
  rm -f "$CONSOLE/guest-$2.log"
  t0=$(date +%s)
  timeout -k 5 300 xl create "$E2E/xl/$1" > "$LOGDIR/xl-create-$2.log" 2>&1
  rc=$?
  echo "xl create $1: rc=$rc in $(($(date +%s) - t0))s"
  cat "$LOGDIR/xl-create-$2.log"
  return $rc
}
bootloader_log() { # the newest bootloader log libxl wrote
  ls -t /var/log/xen/bootloader.*.log 2>/dev/null | head -1
}
bootloader_error() { # our one-line error from the newest bootloader log
  # (The log is the bootloader's pty: the menu's curses output comes first.  The
  # menu now ends its line before any message; the sed still finds an error glued
  # to the last escape sequence, as older versions wrote it.)
  local f; f=$(bootloader_log)
  [ -n "$f" ] && sed -n 's/.*\(pvgrub-py: \)/\1/p' "$f" | tr -d '\r' |
    grep -v -E '^pvgrub-py: (warning:|choose the guest kernel)' | tail -1
}

# -- vtpmd ------------------------------------------------------------------------------
# The TPM 2.0 guests' instances are made as an administrator would: `pvgrubctl vtpm
# create` (EK and platform certificates from a local CA, sha1 and sha256 banks), the
# state encrypted with a host key; vtpmd then serves only those.
HOST_KEY=/var/lib/pvgrub-e2e/host.key
manufacture() { # vtpmd-name uuid
  local dir=/var/lib/pvgrub-e2e/vtpm-$1
  mkdir -p /var/lib/pvgrub-e2e
  [ -s "$HOST_KEY" ] || (umask 077; od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$HOST_KEY")
  pvgrubctl vtpm show --state-dir "$dir" "$2" > /dev/null 2>&1 && return 0
  pvgrubctl vtpm create --state-dir "$dir" --uuid "$2" --tpm2 --key-file "$HOST_KEY" \
    > "$LOGDIR/vtpm-create-$1.log" 2>&1
}
cfg_uuid() { # xl-config: the uuid of its (first) vtpm
  sed -n 's/.*uuid=\([0-9a-f-]*\).*/\1/p' "$E2E/xl/$1" | head -1
}
ca_of() { # vtpmd-name uuid: the CA chain of the instance
  pvgrubctl vtpm show --state-dir "/var/lib/pvgrub-e2e/vtpm-$1" "$2" --json |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["ca_certificate"])'
}
start_vtpmd() { # name [--manufactured | --tpm2]
  local name=$1; shift
  local log=$LOGDIR/vtpmd-$name.log i=0 serve=(--provision-unknown)
  if [ "${1:-}" = --manufactured ]; then shift; serve=(--key-file "$HOST_KEY"); fi
  # --provision-unknown: the scenarios' uuids get a bare instance of the daemon's
  # version on first use (the PCR banks compare_pcrs predicts: all of swtpm's for
  # TPM 2.0; `pvgrubctl vtpm create` would activate sha1 and sha256 only).
  # --stop-instances-on-exit: each scenario starts from no swtpm running.
  pvgrubctl vtpmd --state-dir "/var/lib/pvgrub-e2e/vtpm-$name" -v "${serve[@]}" \
    --stop-instances-on-exit "$@" > "$log" 2>&1 &
  VTPMD_PID=$!
  while ! grep -q '^vtpmd: serving' "$log"; do
    if [ $i -ge 120 ] || ! kill -0 "$VTPMD_PID" 2>/dev/null; then
      echo "vtpmd did not start:"; cat "$log"; VTPMD_PID=""; return 1
    fi
    sleep 0.5; i=$((i + 1))
  done
  echo "vtpmd $name running as $VTPMD_PID"
}
stop_vtpmd() {
  [ -n "$VTPMD_PID" ] || return 0
  kill -TERM "$VTPMD_PID" 2>/dev/null
  local i=0
  while kill -0 "$VTPMD_PID" 2>/dev/null && [ $i -lt 30 ]; do sleep 1; i=$((i + 1)); done
  kill -KILL "$VTPMD_PID" 2>/dev/null
  wait "$VTPMD_PID" 2>/dev/null
  VTPMD_PID=""
}

predict() { # entry banks out.json
  # pvgrubctl predict DISK: the entry pvgrub-py will pick, read out of the guest disk.
  # It must agree with predict over the files the disk was built from (the entry's
  # cmdline as build.sh wrote it), so neither is judged by the code it checks alone.
  local entry=()
  [ "$1" = default ] || entry=(--entry "$1")
  pvgrubctl predict "$E2E/debian-gpt.img" "${entry[@]}" --bank "$2" --json > "$3" || return 1
  pvgrubctl predict --kernel "$E2E/guest/vmlinuz" --initrd "$E2E/guest/initrd.img" \
    --cmdline "$(entry_cmdline "$1")" --bank "$2" --json > "${3%.json}-files.json" || return 1
  python3 -c 'import json, sys; a, b = (json.load(open(f))["pcrs"] for f in sys.argv[1:]); sys.exit(a != b)' \
    "$3" "${3%.json}-files.json" || { echo "predict DISK and predict FILES disagree"; return 1; }
}

# -- 1. doctor ----------------------------------------------------------------------------
scenario_doctor() {
  stage doctor
  local out=$LOGDIR/doctor.txt rc
  pvgrubctl doctor --require-xen > "$out" 2>&1
  rc=$?
  cat "$out"
  local found
  found=$(awk '$2 == "bindings" || $2 == "hypervisor" || $2 == "xenstored" {printf "%s %s; ", $2, $1}' "$out")
  if [ $rc = 0 ] && [ "$(grep -c -E '^ok +(bindings|hypervisor|xenstored) ' "$out")" = 3 ]; then
    result PASS 1 doctor "$found$(grep -E '^ok +bindings' "$out" | sed 's/^ok *bindings *//')"
  else
    result FAIL 1 doctor "rc=$rc; $found"
  fi
}

# -- 2. the drop-in ----------------------------------------------------------------------
scenario_dropin() {
  stage dropin
  local want got
  want=$(entry_cmdline default)
  if ! create dropin.cfg e2e-dropin; then
    result FAIL 2 drop-in "xl create failed: $(bootloader_error)"; destroy e2e-dropin; return
  fi
  if ! wait_console e2e-dropin '^GUEST-DONE' 300; then
    result FAIL 2 drop-in "no GUEST-DONE within 300s; console: $(tail -3 "$CONSOLE/guest-e2e-dropin.log" 2>/dev/null | tr '\n' '|')"
    destroy e2e-dropin; return
  fi
  got=$(guest_line e2e-dropin '^GUEST-CMDLINE: ' | sed 's/^GUEST-CMDLINE: //; s/ *$//')
  gone e2e-dropin 60 || destroy e2e-dropin
  if [ "$got" = "$want" ]; then
    result PASS 2 drop-in "guest /proc/cmdline \"$got\" == the default entry's"
  else
    result FAIL 2 drop-in "guest /proc/cmdline \"$got\" != the default entry's \"$want\""
  fi
}

# -- 2b. the drop-in, deprivileged ------------------------------------------------------
scenario_restricted() {
  stage restricted
  local want got uid rc name=e2e-restricted user=pvgrub-e2e-guest
  id -u "$user" > /dev/null 2>&1 ||
    useradd --system --no-create-home --shell /usr/sbin/nologin "$user" ||
    { result FAIL 2b restricted "cannot create user $user"; return; }
  uid=$(id -u "$user")
  want=$(entry_cmdline default)
  rm -f "$CONSOLE/guest-$name.log"
  LIBXL_BOOTLOADER_USER=$user timeout -k 5 300 xl -vvv create "$E2E/xl/restricted.cfg" \
    > "$LOGDIR/xl-create-$name.log" 2>&1
  rc=$?
  echo "xl -vvv create restricted.cfg: rc=$rc"
  grep -a 'bootloader arg' "$LOGDIR/xl-create-$name.log"
  if [ $rc != 0 ]; then
    result FAIL 2b restricted "xl create rc=$rc: $(bootloader_error)"; destroy "$name"; return
  fi
  if ! grep -a -q -- "bootloader arg: --runas=$uid" "$LOGDIR/xl-create-$name.log"; then
    result FAIL 2b restricted "libxl did not pass --runas=$uid (see xl-create-$name.log)"
    destroy "$name"; return
  fi
  if ! wait_console "$name" '^GUEST-DONE' 300; then
    result FAIL 2b restricted "no GUEST-DONE within 300s"; destroy "$name"; return
  fi
  got=$(guest_line "$name" '^GUEST-CMDLINE: ' | sed 's/^GUEST-CMDLINE: //; s/ *$//')
  gone "$name" 60 || destroy "$name"
  if [ "$got" = "$want" ]; then
    result PASS 2b restricted "libxl ran pvgrub-py --runas=$uid --quiet; guest /proc/cmdline \"$got\" == the default entry's"
  else
    result FAIL 2b restricted "guest /proc/cmdline \"$got\" != the default entry's \"$want\""
  fi
}

# -- 3. measured boot ---------------------------------------------------------------------
scenario_measured() { # id tpm12|tpm2
  local id=$1 kind=$2 name=e2e-$2 banks=sha1 flag=()
  stage "measured-$kind"
  if [ "$kind" = tpm2 ]; then banks=sha1,sha256,sha384,sha512; flag=(--tpm2); fi
  local pred=$LOGDIR/predict-$kind.json
  if ! predict default "$banks" "$pred"; then
    result FAIL "$id" "measured-$kind" "predict failed: $(cat "$pred" | tail -1)"; return
  fi
  if ! start_vtpmd "$kind" "${flag[@]}"; then
    result FAIL "$id" "measured-$kind" "vtpmd did not start: $(tail -1 "$LOGDIR/vtpmd-$kind.log")"; return
  fi
  if ! create "measured-$kind.cfg" "$name"; then
    result FAIL "$id" "measured-$kind" "xl create failed: $(bootloader_error)"
    destroy "$name"; stop_vtpmd; return
  fi
  if ! wait_console "$name" '^GUEST-DONE' 300; then
    result FAIL "$id" "measured-$kind" "no GUEST-DONE within 300s: $(grep -a GUEST "$CONSOLE/guest-$name.log" | tail -3 | tr '\n' '|')"
    destroy "$name"; stop_vtpmd; return
  fi
  gone "$name" 60 || destroy "$name"
  stop_vtpmd
  cp "$CONSOLE/guest-$name.log" "$LOGDIR/guest-$name-measured.log"  # 4 reuses the name
  grep -a '^GUEST' "$CONSOLE/guest-$name.log"
  local cmp
  if cmp=$(python3 "$E2E/compare_pcrs.py" "$pred" "$CONSOLE/guest-$name.log" "$kind"); then
    result PASS "$id" "measured-$kind" "$cmp"
  else
    result FAIL "$id" "measured-$kind" "$cmp"
  fi
}

# -- 4. fail closed -----------------------------------------------------------------------
scenario_failclosed() {
  stage failclosed
  local err left rc
  pgrep -f 'pvgrubctl vtpmd' > /dev/null && { echo "a vtpmd is still running"; stop_vtpmd; }
  create measured-tpm12.cfg e2e-tpm12
  rc=$?
  err=$(bootloader_error)
  left=$(domains_left)
  local nodes; nodes=$(xenstore-ls /local/domain/0/device/vtpm 2>/dev/null | head -3 | tr '\n' ' ')
  if [ $rc != 0 ] && [ -n "$err" ] && [ -z "$left" ] && [ -z "$nodes" ]; then
    result PASS 4 fail-closed "xl create rc=$rc; bootloader: \"$err\"; xl list: Domain-0 only"
  else
    result FAIL 4 fail-closed "xl create rc=$rc; bootloader: \"$err\"; domains left: [$left]; dom0 vtpm nodes: [$nodes]"
  fi
  for d in $left; do destroy "$d"; done
}

# -- 4b. --vtpm-label without FLASK --------------------------------------------------------
scenario_label() {
  stage label
  local err left rc nodes
  if ! start_vtpmd label; then result FAIL 4b vtpm-label "vtpmd did not start"; return; fi
  create label.cfg e2e-label
  rc=$?
  err=$(bootloader_error)
  left=$(domains_left)
  nodes=$(xenstore-ls /local/domain/0/device/vtpm 2>/dev/null | head -3 | tr '\n' ' ')
  local healthy=yes
  kill -0 "$VTPMD_PID" 2>/dev/null || healthy="no (vtpmd died)"
  stop_vtpmd
  case $err in *"vtpm label"*) ;; *) rc=0 ;; esac  # it must be the label check that failed
  if [ $rc != 0 ] && [ -z "$left" ] && [ -z "$nodes" ] && [ "$healthy" = yes ]; then
    result PASS 4b vtpm-label "xl create rc=$rc; bootloader: \"$err\"; xl list: Domain-0 only; vtpmd healthy"
  else
    result FAIL 4b vtpm-label "xl create rc=$rc; bootloader: \"$err\"; domains left: [$left]; dom0 vtpm nodes: [$nodes]; vtpmd healthy: $healthy"
  fi
  for d in $left; do destroy "$d"; done
}

# -- 5. the builder ------------------------------------------------------------------------
# pvgrubctl boot without --sim: our own libxenguest calls build the guest, measured
# through a dom0 attach to its vTPM instance, which the guest then gets as its own.
boot_builder() { # out
  timeout -k 5 300 pvgrubctl boot --disk "$E2E/debian-gpt.img" --name e2e-builder --memory 256 \
    --vtpm xen:0 --vtpm-uuid "$UUID_BUILDER" --require-vtpm --json > "$1" 2>&1
}

scenario_builder() {
  stage builder
  local name=e2e-builder out=$LOGDIR/boot-builder.txt rc
  local pred=$LOGDIR/predict-builder.json
  predict default sha1 "$pred" || { result FAIL 5 builder "predict failed"; return; }
  start_vtpmd builder || { result FAIL 5 builder "vtpmd did not start"; return; }
  rm -f "$CONSOLE/guest-$name.log"
  boot_builder "$out"
  rc=$?
  cat "$out"
  if [ $rc != 0 ]; then
    destroy "$name"; stop_vtpmd
    result FAIL 5 builder "pvgrubctl boot rc=$rc: $(grep -v '^ ' "$out" | tail -1 | cut -c1-300)"; return
  fi
  if ! wait_console "$name" '^GUEST-DONE' 300; then
    result FAIL 5 builder "built, but no GUEST-DONE on its console within 300s: $(grep -a GUEST "$CONSOLE/guest-$name.log" 2>/dev/null | tail -2 | tr '\n' '|')"
    destroy "$name"; stop_vtpmd; return
  fi
  destroy "$name"
  stop_vtpmd
  local cmp
  if cmp=$(python3 "$E2E/compare_pcrs.py" "$pred" "$CONSOLE/guest-$name.log" tpm12); then
    result PASS 5 builder "pvgrubctl boot on real Xen, guest read back: $cmp"
  else
    result FAIL 5 builder "pvgrubctl boot on real Xen: $cmp"
  fi
}

# -- 6. the hypervisor layer's own tests, on the real thing ---------------------------------
scenario_pytest() {
  stage pytest-real-xen
  local out=$LOGDIR/pytest-real-xen.txt rc summary
  # The pytest script, from /: "python3 -m pytest" in the checkout would import the
  # source tree's pvgrub_py (no compiled bindings) instead of the installed one.
  (cd / && timeout 600 pytest -p no:cacheprovider -q -rs \
     /opt/pvgrub-py/tests/test_cbindings_xen.py /opt/pvgrub-py/tests/test_xen_libxc_host.py \
     /opt/pvgrub-py/tests/test_hypervisor_contract.py) \
     > "$out" 2>&1
  rc=$?
  summary=$(grep -E '(passed|failed|error)' "$out" | tail -1)
  if [ $rc = 0 ]; then
    result PASS 6 real-xen-tests "test_cbindings_xen.py, test_xen_libxc_host.py, test_hypervisor_contract.py on real Xen: $summary"
  else
    result FAIL 6 real-xen-tests "test_cbindings_xen.py, test_xen_libxc_host.py, test_hypervisor_contract.py on real Xen (rc=$rc): $summary"
  fi
}

# -- 7. a TPM 2.0 in the guest: pvgrub-guest-tpm, the delivered event log, attestation -----
# The guest (guest/tpm2-guest.sh in its read-only Debian root) prints GUEST-* lines on
# its console; its quote comes back as base64 GUEST-QUOTE lines.
guest_quote_files() { # name dir: the guest's quote, as the files tpm2_quote wrote
  local what
  mkdir -p "$2"
  for what in akpub message signature; do
    guest_line "$1" "^GUEST-QUOTE $what " | awk '{print $3}' | base64 -d > "$2/$what" || return 1
    [ -s "$2/$what" ] || return 1
  done
}
send_challenge() { # name nonce dir ca: once the guest asks, MakeCredential for its AK and
  # EK (the EK certificate checked against the vtpmd CA) and the nonce into its data/
  local domid what
  wait_console "$1" '^GUEST-(ATTEST-READY|DONE)' 400 || return 1
  guest_line "$1" '^GUEST-ATTEST-READY' | grep -q . || return 1
  mkdir -p "$3"
  for what in ekpub ekcert akpub; do
    guest_line "$1" "^GUEST-ATTEST $what " | awk '{print $3}' | base64 -d > "$3/$what" || return 1
  done
  if ! pvgrubctl attest challenge --ek-public "$3/ekpub" --ek-certificate "$3/ekcert" --ca "$4" \
       --ak-public "$3/akpub" --secret-out "$3/secret" --credential-out "$3/credential" \
       > "$3/challenge.txt" 2>&1; then
    echo "attest challenge refused: $(tail -1 "$3/challenge.txt")" > "$3/challenge.err"
    : > "$3/credential"
  fi
  domid=$(xl domid "$1") || return 1
  xenstore-write "/local/domain/$domid/data/attest-credential" "$(base64 -w0 < "$3/credential")" \
    "/local/domain/$domid/data/attest-nonce" "$2"
}
binding() { # name dir: did ActivateCredential release dom0's secret?
  local want got
  [ -s "$2/challenge.err" ] && { cat "$2/challenge.err"; return 1; }
  want=$(od -An -tx1 -v < "$2/secret" | tr -d ' \n')
  got=$(guest_line "$1" '^GUEST-ATTEST-SECRET ' | awk '{print $2}')
  if [ -n "$want" ] && [ "$got" = "$want" ]; then
    echo "EK certificate chains to the vtpmd CA; the guest's ActivateCredential released dom0's secret (${#want} hex digits)"
  else
    echo "ActivateCredential: guest ${got:-nothing}, dom0 expected $want"; return 1
  fi
}
verify_quote() { # dir nonce reference: attest verify's line, and tpm2_checkquote's verdict
  local out rc oracle
  out=$(pvgrubctl attest verify --public "$1/akpub" --message "$1/message" --signature "$1/signature" \
    --qualification "$2" --reference "$3" 2>&1)
  rc=$?
  # tpm2_checkquote (stock tpm2-tools, no PCR file): signature and nonce only.
  if tpm2_checkquote -u "$1/akpub" -m "$1/message" -s "$1/signature" -q "$2" > "$1/checkquote.txt" 2>&1
  then oracle="tpm2_checkquote: signature and nonce ok"
  else oracle="tpm2_checkquote rejects: $(tail -1 "$1/checkquote.txt")"; fi
  echo "attest verify rc=$rc: $out; $oracle"
  return $rc
}
guest_tpm2_boot() { # cfg name vtpmd-name nonce: boot, hand over the challenge, wait
  local t0 uuid; t0=$(date +%s)
  uuid=$(cfg_uuid "$1")
  manufacture "$3" "$uuid" || { echo "vtpm create failed: $(tail -1 "$LOGDIR/vtpm-create-$3.log")"; return 1; }
  start_vtpmd "$3" --manufactured ||
    { echo "vtpmd did not start: $(tail -1 "$LOGDIR/vtpmd-$3.log")"; return 1; }
  if ! create "$1" "$2"; then
    echo "xl create failed: $(bootloader_error)"; destroy "$2"; stop_vtpmd; return 1
  fi
  [ -z "$4" ] || send_challenge "$2" "$4" "$LOGDIR/quote-$2" "$(ca_of "$3" "$uuid")" ||
    echo "the guest never asked for a challenge"
  if ! wait_console "$2" '^GUEST-DONE' 400; then
    echo "no GUEST-DONE within 400s: $(grep -a GUEST "$CONSOLE/guest-$2.log" | tail -3 | tr '\n' '|')"
    destroy "$2"; stop_vtpmd; return 1
  fi
  gone "$2" 60 || destroy "$2"
  stop_vtpmd
  cp "$CONSOLE/guest-$2.log" "$LOGDIR/guest-$2.log"
  grep -a '^GUEST' "$CONSOLE/guest-$2.log" | grep -v '^GUEST-QUOTE'
  echo "booted in $(($(date +%s) - t0))s"
}
guest_tpm2_summary() { # name: version, /dev/tpmrm0 time, tpm0's first dmesg line
  local v r d
  v=$(guest_line "$1" '^GUEST-TPM-VERSION ' | awk '{print $2}')
  r=$(guest_line "$1" '^GUEST-TPMRM0 ' | sed 's/^GUEST-TPMRM0 //')
  d=$(guest_line "$1" '^GUEST-DMESG: .*(tpm0|vtpm)' | sed 's/^GUEST-DMESG: //' | cut -c1-120)
  echo "tpm_version_major=$v; /dev/tpmrm0 answered tpm2_pcrread at uptime ${r:-never}; dmesg: ${d:-none}"
  [ "$v" = 2 ] && [ -n "$r" ]
}

scenario_guest_tpm2() { # id type cfg name uuid-suffix
  local id=$1 kind=$2 cfg=$3 name=$4 label=guest-tpm2 nonce="" out pred=$LOGDIR/predict-guest-tpm2.json
  [ "$kind" = pvh ] && label=guest-tpm2-pvh
  stage "$label"
  if ! predict e2e-tpm2 sha1,sha256 "$pred"; then result FAIL "$id" "$label" "predict failed"; return; fi
  nonce=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
  if ! out=$(guest_tpm2_boot "$cfg" "$name" "$label" "$nonce" 2>&1 | tee /dev/stderr | tail -1); then
    result FAIL "$id" "$label" "$out"; return
  fi
  local summary cmp ok=yes
  summary=$(guest_tpm2_summary "$name") || ok=no
  cmp=$(python3 "$E2E/compare_pcrs.py" "$pred" "$LOGDIR/guest-$name.log" tpm2) || ok=no
  local bound; bound=$(binding "$name" "$LOGDIR/quote-$name") || bound="binding: $bound"
  if [ $ok = yes ]; then result PASS "$id" "$label" "$summary; tpm2_pcrread vs predict: $cmp; $bound"
  else result FAIL "$id" "$label" "$summary; tpm2_pcrread vs predict: $cmp; $bound; $(guest_line "$name" '^GUEST-TPM: (no |EK|activ)')"; fi
  [ "$kind" = pv ] || return 0

  stage guest-eventlog
  local size
  size=$(guest_line "$name" '^GUEST-TPM: event log ' | sed 's/^GUEST-TPM: event log //')
  if cmp=$(python3 "$E2E/compare_pcrs.py" --eventlog "$LOGDIR/guest-$name.log"); then
    result PASS 7c guest-eventlog "in the guest, tpm2_eventlog on $size replays to tpm2_pcrread: $cmp"
  else
    result FAIL 7c guest-eventlog "$(guest_line "$name" '^GUEST-TPM: (no event log|tpm2_eventlog)')$cmp"
  fi

  stage attest
  local ref=$LOGDIR/reference-e2e-tpm2.json dir=$LOGDIR/quote-$name verdict
  pvgrubctl predict "$E2E/debian-gpt.img" --entry e2e-tpm2 --format keylime > "$ref" ||
    { result FAIL 7e attest "predict --format keylime failed"; return; }
  if ! guest_quote_files "$name" "$dir"; then
    result FAIL 7e attest "no quote from the guest: $(guest_line "$name" '^GUEST-TPM: (quote|no nonce)')"; return
  fi
  local bound=""
  if bound=$(binding "$name" "$dir") && verdict=$(verify_quote "$dir" "$nonce" "$ref"); then
    result PASS 7e attest "$bound; guest tpm2_quote of sha256:4,5 with dom0's nonce $nonce; $verdict"
  else
    result FAIL 7e attest "$bound; ${verdict:-}"
  fi
}

scenario_attest_tamper() {
  stage attest-tamper
  local name=e2e-guest-tpm2-tamper nonce out verdict ref=$LOGDIR/reference-e2e-tpm2.json
  local dir=$LOGDIR/quote-$name
  nonce=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
  [ -s "$ref" ] || pvgrubctl predict "$E2E/debian-gpt.img" --entry e2e-tpm2 --format keylime > "$ref"
  if ! out=$(guest_tpm2_boot guest-tpm2-tamper.cfg "$name" attest-tamper "$nonce" 2>&1 | tail -1); then
    result FAIL 7d attest-tamper "$out"; return
  fi
  local cmdline; cmdline=$(guest_line "$name" '^GUEST-CMDLINE: ' | sed 's/^GUEST-CMDLINE: //; s/ *$//')
  if ! guest_quote_files "$name" "$dir"; then
    result FAIL 7d attest-tamper "no quote from the guest"; return
  fi
  verdict=$(verify_quote "$dir" "$nonce" "$ref")
  case $verdict in
    "attest verify rc=1: REJECT: pcr-digest"*"tpm2_checkquote: signature and nonce ok")
      result PASS 7d attest-tamper "guest booted with cmdline \"$cmdline\"; $verdict" ;;
    *) result FAIL 7d attest-tamper "guest cmdline \"$cmdline\"; $verdict" ;;
  esac
}

scenario_killed_bridge() {
  stage vtpmd-killed-bridge
  local name=e2e-guest-tpm2-hold err="" back="" health=ok uuid
  uuid=$(cfg_uuid guest-tpm2-hold.cfg)
  if ! manufacture guest-hold "$uuid" || ! start_vtpmd guest-hold --manufactured; then
    result FAIL F1b vtpmd-killed-bridge "vtpm create or vtpmd failed"; return
  fi
  if ! create guest-tpm2-hold.cfg "$name"; then
    result FAIL F1b vtpmd-killed-bridge "xl create failed: $(bootloader_error)"; destroy "$name"; stop_vtpmd; return
  fi
  if ! wait_console "$name" '^GUEST-HOLDING' 400; then
    result FAIL F1b vtpmd-killed-bridge "the guest never read its TPM: $(grep -a GUEST "$CONSOLE/guest-$name.log" | tail -3 | tr '\n' '|')"
    destroy "$name"; stop_vtpmd; return
  fi
  local before; before=$(guest_line "$name" '^GUEST-PCR sha1 4 ' | awk '{print $4}')
  echo "killing vtpmd $VTPMD_PID (SIGKILL)"
  local t_kill; t_kill=$(date +%s)
  kill -KILL "$VTPMD_PID"; wait "$VTPMD_PID" 2>/dev/null; VTPMD_PID=""
  if wait_console "$name" '^GUEST-TPM-ERROR' 240; then
    err="$(guest_line "$name" '^GUEST-TPM-ERROR' | cut -c1-200) ($(($(date +%s) - t_kill))s after the kill)"
  fi
  start_vtpmd guest-hold --manufactured || health="vtpmd cannot restart"
  if wait_console "$name" '^GUEST-TPM-BACK' 240; then
    back=$(guest_line "$name" '^GUEST-TPM-BACK' | cut -c1-200)
  fi
  destroy "$name"
  stop_vtpmd
  cp "$CONSOLE/guest-$name.log" "$LOGDIR/guest-$name.log"
  local after; after=$(echo "${back:-}" | sed -n 's/.*0x\([0-9A-Fa-f]*\).*/\1/p' | tr 'A-F' 'a-f')
  if [ -n "${err:-}" ] && [ -n "${back:-}" ] && [ "$health" = ok ]; then
    local daemon; daemon=$(grep -a -E '^GUEST-DAEMON: .*(stopped waiting|disconnected|connected)' \
      "$LOGDIR/guest-$name.log" | tail -n +2 | sed 's/^GUEST-DAEMON: pvgrub-guest-tpm: //' | tr -d '\r' | tr '\n' '|')
    result PASS F1b vtpmd-killed-bridge "guest: \"$err\"; pvgrub-guest-tpm: \"$daemon\"; after vtpmd restarted: \"$back\""
    # Issue 15's vtpm-restart: the instance outlived vtpmd, so the guest's PCRs did too.
    if [ -n "$before" ] && [ "$after" = "$before" ]; then
      result PASS F1c vtpm-restart "vtpmd killed (SIGKILL) and restarted while the guest ran; its sha1 PCR4 before=$before after=$after =="
    else
      result FAIL F1c vtpm-restart "sha1 PCR4 before the kill ${before:-?}, after the restart ${after:-?}"
    fi
  else
    result FAIL F1b vtpmd-killed-bridge "guest error: \"${err:-none within 240s}\"; back: \"${back:-not within 240s}\"; dom0: $health; $(grep -a 'GUEST-DAEMON' "$CONSOLE/guest-$name.log" | tail -2 | tr '\n' '|')"
  fi
}

# -- faults ---------------------------------------------------------------------------------
scenario_killed() {
  stage vtpmd-killed
  local name=e2e-hold
  if ! start_vtpmd hold; then result FAIL F1 vtpmd-killed "vtpmd did not start"; return; fi
  if ! create hold.cfg "$name"; then
    result FAIL F1 vtpmd-killed "xl create failed: $(bootloader_error)"; destroy "$name"; stop_vtpmd; return
  fi
  if ! wait_console "$name" '^GUEST-HOLDING' 300; then
    result FAIL F1 vtpmd-killed "the guest never read its TPM: $(grep -a GUEST "$CONSOLE/guest-$name.log" | tail -3 | tr '\n' '|')"
    destroy "$name"; stop_vtpmd; return
  fi
  local pcrs="" pred=$LOGDIR/predict-hold.json
  if predict e2e-hold sha1 "$pred" &&
     pcrs=$(python3 "$E2E/compare_pcrs.py" "$pred" "$CONSOLE/guest-$name.log" tpm12); then
    pcrs="PCRs of --entry=e2e-hold == predict"
  else
    pcrs="PCRs differ from predict --entry e2e-hold: $pcrs"
  fi
  local children; children=$(pgrep -P "$VTPMD_PID" | tr '\n' ' ')
  echo "killing vtpmd $VTPMD_PID (SIGKILL); its swtpm children: $children"
  kill -KILL "$VTPMD_PID"; wait "$VTPMD_PID" 2>/dev/null; VTPMD_PID=""
  local guest_err="" health=ok
  if wait_console "$name" '^GUEST-TPM-ERROR' 240; then
    guest_err=$(guest_line "$name" '^GUEST-TPM-ERROR' | cut -c1-300)
  fi
  # dom0 health: the toolstack, xenstore and a fresh vTPM daemon all still work.
  timeout 30 xl list > /dev/null 2>&1 || health="xl list failed"
  timeout 30 xenstore-read /local/domain/0/name > /dev/null 2>&1 || health="$health; xenstore read failed"
  destroy "$name"
  [ -z "$(domains_left)" ] || health="$health; domains left: $(domains_left)"
  for p in $children; do kill "$p" 2>/dev/null; done
  if start_vtpmd hold-restart; then stop_vtpmd; else health="$health; vtpmd cannot restart"; fi
  if [ -n "$guest_err" ] && [ "$health" = ok ] && [ "${pcrs#PCRs of}" != "$pcrs" ]; then
    result PASS F1 vtpmd-killed "$pcrs; guest after the kill: \"$guest_err\"; dom0: xl list, xenstore, vtpmd restart ok"
  else
    result FAIL F1 vtpmd-killed "$pcrs; guest error: \"${guest_err:-none within 240s}\"; dom0: $health"
  fi
}

# -- M1. the vTPM moves with its guest: xl save, vtpm export/import, xl restore ------------
good_ticks() { # name: the guest's GUEST-MIGRATE-TICK lines that read PCRs and NV
  grep -a -E '^GUEST-MIGRATE-TICK [0-9]+ [0-9a-f]{64} [0-9a-f]{64} [0-9a-f]+' \
    "$CONSOLE/guest-$1.log" 2>/dev/null | tr -d '\r'
}
scenario_vtpm_migrate() { # id label suspend|connected
  local id=$1 label=$2 how=$3
  stage "$label"
  local name=e2e-guest-tpm2-migrate uuid dir=/var/lib/pvgrub-e2e save archive written
  local before after n0 i=0 t0 why="" src=migrate-src-$id dst=migrate-dst-$id
  uuid=$(cfg_uuid guest-tpm2-migrate.cfg)
  save=$dir/migrate.save archive=$dir/migrate.vtpm
  rm -rf "$dir/vtpm-$src" "$dir/vtpm-$dst" "$save" "$archive"
  mkdir -p "$dir"
  MIGRATION_KEY=$dir/migration.key
  (umask 077; od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$MIGRATION_KEY")
  if ! manufacture "$src" "$uuid" || ! start_vtpmd "$src" --manufactured; then
    result FAIL "$id" "$label" "vtpm create or vtpmd failed"; return
  fi
  if ! create guest-tpm2-migrate.cfg "$name"; then
    result FAIL "$id" "$label" "xl create failed: $(bootloader_error)"; destroy "$name"; stop_vtpmd; return
  fi
  if ! wait_console "$name" '^GUEST-MIGRATE-TICK [0-9]+ [0-9a-f]{64} ' 400; then
    result FAIL "$id" "$label" "no reading before the save: $(grep -a GUEST "$CONSOLE/guest-$name.log" | tail -3 | tr '\n' '|')"
    destroy "$name"; stop_vtpmd; return
  fi
  written=$(guest_line "$name" '^GUEST-MIGRATE-NV-WRITTEN ' | awk '{print $2}')
  t0=$(date +%s)
  # The guest's frontend lets go first (a connection saved open cannot be closed after
  # the restore: Linux's evtchn driver BUGs); then save (the domain stays, paused), move
  # the running vTPM out, and the domain goes.
  # (M1b saves it connected, as an administrator who forgot would: the daemon must
  # abandon its stale port rather than unbind it, and reconnect.)
  if [ "$how" = suspend ]; then
    pvgrubctl vtpm suspend "$name" --timeout 60 > "$LOGDIR/vtpm-suspend.log" 2>&1 ||
      why="vtpm suspend failed: $(tail -1 "$LOGDIR/vtpm-suspend.log")"
  else
    echo "not suspended: let go in 0 s" > "$LOGDIR/vtpm-suspend.log"
  fi
  [ -n "$why" ] || timeout 300 xl save -p "$name" "$save" > "$LOGDIR/xl-save.log" 2>&1 ||
    why="xl save failed: $(tail -1 "$LOGDIR/xl-save.log")"
  before=$(good_ticks "$name" | tail -1 | cut -d' ' -f3-)
  n0=$(good_ticks "$name" | wc -l)
  if [ -z "$why" ]; then
    pvgrubctl vtpm export --state-dir "$dir/vtpm-$src" "$uuid" --to "$archive" \
      --migration-key-file "$MIGRATION_KEY" > "$LOGDIR/vtpm-export.log" 2>&1 ||
      why="vtpm export failed: $(tail -1 "$LOGDIR/vtpm-export.log")"
  fi
  destroy "$name"
  stop_vtpmd
  # The target: another state directory (vtpmd knows nothing else of a host), the host key.
  if [ -z "$why" ]; then
    pvgrubctl vtpm import --state-dir "$dir/vtpm-$dst" --from "$archive" \
      --migration-key-file "$MIGRATION_KEY" --key-file "$HOST_KEY" \
      > "$LOGDIR/vtpm-import.log" 2>&1 || why="vtpm import failed: $(tail -1 "$LOGDIR/vtpm-import.log")"
  fi
  [ -n "$why" ] || start_vtpmd "$dst" --manufactured || why="vtpmd on the imported state did not start"
  if [ -z "$why" ]; then
    timeout 300 xl restore "$save" > "$LOGDIR/xl-restore.log" 2>&1 || why="xl restore failed: $(tail -1 "$LOGDIR/xl-restore.log")"
  fi
  while [ -z "$why" ] && [ "$(good_ticks "$name" | wc -l)" -le "$n0" ]; do
    [ $i -ge 240 ] && { why="no reading within 240s of the restore"; break; }
    sleep 1; i=$((i + 1))
  done
  after=$(good_ticks "$name" | tail -1 | cut -d' ' -f3-)
  local errors; errors=$(grep -a -c '^GUEST-MIGRATE-TICK [0-9]* error' "$CONSOLE/guest-$name.log")
  destroy "$name"
  stop_vtpmd
  cp "$CONSOLE/guest-$name.log" "$LOGDIR/guest-$name-$id.log"
  if [ -n "$why" ]; then
    result FAIL "$id" "$label" "$why; $(grep -a 'GUEST-DAEMON' "$LOGDIR/guest-$name-$id.log" | tail -2 | tr -d '\r' | tr '\n' '|')"
  elif grep -a -q 'kernel BUG' "$LOGDIR/guest-$name-$id.log"; then
    result FAIL "$id" "$label" "the guest kernel hit a BUG: $(grep -a -m1 'kernel BUG' "$LOGDIR/guest-$name-$id.log" | tr -d '\r')"
  elif [ "$how" = connected ] && ! grep -a -q 'saved or migrated with its vTPM connected' "$LOGDIR/guest-$name-$id.log"; then
    result FAIL "$id" "$label" "the daemon did not report the stale connection it abandoned"
  elif [ -n "$before" ] && [ "$after" = "$before" ] && [ "${after##* }" = "$written" ]; then
    result PASS "$id" "$label" "$( [ "$how" = suspend ] && echo "vtpm suspend ($(grep -o 'let go in [0-9.]* s' "$LOGDIR/vtpm-suspend.log"))" || echo "saved connected, stale port abandoned"), xl save -p, vtpm export of the running instance sealed with a migration key, import into another state dir, xl restore in $(($(date +%s) - t0))s; sha256 PCR4 PCR5 NV(0x01800010) before: $before; after: $after ==; $errors failed reading(s) while it moved"
  else
    result FAIL "$id" "$label" "before: ${before:-?}; after: ${after:-?}; NV written $written"
  fi
}

scenario_rejected() {
  stage rejected-disk
  local rc err left
  create rejected.cfg e2e-rejected
  rc=$?
  err=$(bootloader_error)
  left=$(domains_left)
  if [ $rc != 0 ] && [ -n "$err" ] && [ -z "$left" ]; then
    result PASS F2 rejected-disk "xl create rc=$rc; bootloader: \"$err\"; xl list: Domain-0 only"
  else
    result FAIL F2 rejected-disk "xl create rc=$rc; bootloader: \"$err\"; domains left: [$left]"
  fi
  for d in $left; do destroy "$d"; done
}

# -- run -------------------------------------------------------------------------------------
stage scenarios
: > "$SCEN"
echo "pvgrub-py: $(pip show pvgrub-py 2>/dev/null | sed -n 's/^Version: //p'); xen: $(xl info | sed -n 's/^xen_version *: //p')"
losetup /dev/loop0 "$E2E/debian-gpt.img" && losetup /dev/loop1 "$E2E/rejected.img" || echo "losetup failed"
losetup -a
selected 1 && scenario_doctor
selected 2 && scenario_dropin
selected 2b && scenario_restricted
selected 3a && scenario_measured 3a tpm12
selected 3b && scenario_measured 3b tpm2
selected 4 && scenario_failclosed
selected 4b && scenario_label
selected 5 && scenario_builder
selected 7a && scenario_guest_tpm2 7a pv guest-tpm2.cfg e2e-guest-tpm2
selected 7b && scenario_guest_tpm2 7b pvh guest-tpm2-pvh.cfg e2e-guest-tpm2-pvh
selected 7d && scenario_attest_tamper
selected F1 && scenario_killed
selected F1b && scenario_killed_bridge
selected M1 && scenario_vtpm_migrate M1 vtpm-migrate suspend
selected M1b && scenario_vtpm_migrate M1b vtpm-migrate-connected connected
selected F2 && scenario_rejected
selected 6 && scenario_pytest
stop_vtpmd
echo "domains at the end: [$(domains_left)]"
stage scenarios-done
exit 0
