"""ActivityPub for a node: discovery, the ``Service`` actor, inbox, outbox and the delivery worker.

The wire formats are :mod:`protocol.activitypub` (pure); this package adds the HTTP
handlers, the storage of activities and deliveries, and the network (always through
:class:`node.outbound.OutboundClient`). :func:`federation.app.setup_federation`
wires it into the node app.
"""
