"""What happened to every call in the queues, and the numbers supervisors run the hotline on.

Owns the call journal: a pure tracker (``calls``) that follows a caller from the moment Asterisk
creates the channel to its hangup and yields one finished record per call, and the store
(``journal``) that writes those records through SQLAlchemy. Live queue and agent statistics grow
here too, fed by the same typed AMI events.
"""
