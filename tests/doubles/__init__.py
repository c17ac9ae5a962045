"""HTTP test doubles for servers that cannot run on a test machine (Artifactory).

A double speaks the server's documented HTTP API, so the product reaches it through the same
client code it uses in production; it adds fault injection and request counting for tests.
"""
