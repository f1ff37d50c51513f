"""What every layer may use: configuration, storage (engines, units of work, the declarative
base) and the event bus. It imports no feature and no PBX adapter."""
