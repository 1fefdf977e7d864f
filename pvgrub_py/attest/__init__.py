"""Remote attestation of a pv-grub style boot with the tools people already run.

``reference`` writes the expected PCR values in the formats verifiers read
(Keylime's ``tpm_policy``, systemd-pcrlock's ``.pcrlock``) and reads any of
them back; ``quote`` parses what ``tpm2_quote`` and ``tpm2_createak`` write;
``verify`` judges a quote against a reference, check by check.
"""
