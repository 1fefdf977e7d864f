"""TCG event logs: read, write, replay and verify the record of a measured boot.

``records`` holds the values, ``codec`` the two wire formats (TCG 1.2 SHA-1
and TPM 2.0 crypto-agile), ``replay`` turns a log into PCR values and
compares them, ``builder`` writes the log pv-grub's measurements produce,
``render`` shows a log to a person or a script and ``nv_channel`` hands a
log to a PV guest in its TPM 2.0 vTPM's NV memory (and reads it back there).
"""
