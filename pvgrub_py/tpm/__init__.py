"""TPM 1.2 and 2.0: wire codecs, transports and a version-neutral client."""
