"""AsyncAPI 3.0 documents of choreograph applications, and a page that shows them.

    from broker import Bus
    from broker.asyncapi import asyncapi_document

    bus = Bus("memory://", source="orders")
    bus.publisher("orders", type="order.placed", schema=Order)
    document = await asyncapi_document(bus)

Channels are the topics a bus declares it publishes (:meth:`broker.Bus.publisher`) or
subscribes to; operations are ``send`` and ``receive`` (identified by the consumer group);
messages are CloudEvents types with the CloudEvents attributes as headers and the declared
payload schema. :func:`render_page` shows a document as one self-contained HTML page.
"""

from broker.asyncapi.document import ASYNCAPI_VERSION, asyncapi_document
from broker.asyncapi.page import render_page, to_yaml
from broker.asyncapi.payloads import SchemaRegistry

__all__ = ["ASYNCAPI_VERSION", "SchemaRegistry", "asyncapi_document", "render_page", "to_yaml"]
