"""The Xen vTPM transport (tpmif): shared page, frontend, backend, daemon."""
