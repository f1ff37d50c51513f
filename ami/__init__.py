"""Asterisk Manager Interface connector.

Owns everything that crosses the AMI socket: a pure frame codec (``codec``) that decodes UTF-8
incrementally and drops unwanted events by name before parsing them, the typed, immutable domain
events the rest of the bridge consumes (``events``), and the live shell (``client``) that wraps
panoramisk's ``Manager`` with reconnect back-off, action deadlines and a dispatch in which one
event's failure never touches another.
"""
