"""OAI-PMH 2.0 data provider, sans-IO.

``requests`` parses and validates a verb's arguments into a typed request,
``tokens`` signs and checks resumption tokens, ``sets`` and ``metadata`` compute
what storage keeps per sheet (set memberships, pre-rendered metadata), and
``response`` renders the envelope. Storage access lives in :mod:`node.oai`.
"""
