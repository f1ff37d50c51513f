"""FastAGI server: how the dialplan asks the bridge where a call goes.

Owns the pure AGI codec (request headers in, command lines out, ``200 result=`` replies parsed),
the asyncio stream server with read deadlines and a route table (``agi://HOST:PORT/route``),
and the handler that turns an ``ivr_bypass`` decision into ``HOTLINE_*`` channel variables. It
never decides anything itself and never makes a caller wait on it: on any failure the dialplan
queues the call to the default queue.
"""
