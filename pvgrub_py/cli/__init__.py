"""Thin command-line layers over the library; no logic lives here."""
