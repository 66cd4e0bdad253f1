"""Typesense indexing and querying for the hub.

``server`` runs the bundled Typesense 0.24.1; ``schema`` maps a ``Sheet`` to a
document; ``filters`` builds injection-proof ``filter_by`` strings; ``client``
speaks raw HTTP on a pooled aiohttp session; ``query``, ``clusters`` and
``suggest`` turn hub requests into searches; ``synonyms`` holds the synonym files.
"""
