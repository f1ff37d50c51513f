"""Attacks on a running ``hotline run`` process, played over loopback as an attacker plays them."""
