"""Call recordings: from Asterisk's MixMonitor spool to a verified, linked, access-controlled store.

Owns recording names, ingest of finished files (hash, size, duration from the WAV header), the
storage port, integrity checks, retention and audited playback. Only the package boundary exists so
far; the capability is tracked as its own issue.
"""
