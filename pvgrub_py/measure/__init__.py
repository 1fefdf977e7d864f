"""pv-grub's measurement plan: what is hashed, into which PCR, in which order."""
