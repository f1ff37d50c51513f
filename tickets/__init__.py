"""Work orders (tickets) and their 12345 service-level clocks.

Owns ticket numbers, the status life cycle (new, signed, contacted, on site, resolved, closed,
reopened, callback), matching a call to the caller's open ticket and the SLA deadlines on the
working calendar. Only the package boundary and the ticket reference on each journal row exist so
far; the capability is tracked as its own issue.
"""
