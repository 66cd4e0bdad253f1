"""ActivityPub wire formats for Essaim, sans IO.

Everything here takes bytes, dicts and typed records and returns the same; the
clock, the keys and the key lookup are injected by the caller (ARCHITECTURE §2.1,
§2.11, §2.12). Network access, storage and delivery live in ``federation/``.
"""
