"""Record real AMI wire transcripts (plus Asterisk's queue_log) from the Asterisk 22 test bed.

Run it with ``scripts/record-transcript`` (see ``--help``).  The pieces:

``testbed``    the sandbox Asterisk (CLI, idle/reset, queue_log offset) and SIPp phones
``wire``       a raw AMI session that keeps every byte exactly as received
``routing``    a tiny FastAGI ``route`` handler that routes by caller number
``scenarios``  the scripted call mixes (``multi-queue-pause``, ``timeouts``, ...)
"""
