"""The hub's harvester: pulls partner nodes (and other OAI-PMH 2.0 providers) into the hub's sheet store.

:mod:`harvesting.transport` fetches and checks pages strictly; :mod:`harvesting.records`
decodes records into sheets; :mod:`harvesting.harvester` commits them page by page with
a checkpoint, incrementally.
"""
