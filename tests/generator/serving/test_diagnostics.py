"""Reading a tritonserver log: what a stopping server waits for."""

from __future__ import annotations

from generator.serving.diagnostics import open_http_connections

# Lines as tritonserver 2.51 writes them after SIGTERM while a client keeps a connection open.
STOPPING = """Signal (15) received.
I1207 18:53:37.871157 2999 http_server.cc:248] "Timeout 30: Found 2 HTTP service connections"
I1207 18:53:38.871298 2999 http_server.cc:248] "Timeout 29: Found 1 HTTP service connections"
"""


def test_open_http_connections_is_the_last_count_with_the_seconds_left() -> None:
    assert open_http_connections(STOPPING) == (1, 29)


def test_no_wait_for_connections() -> None:
    log = (
        'I1207 18:52:56.230472 27965 server.cc:321] "Timeout 30: Found 0 model versions that have in-flight inferences"'
    )
    assert open_http_connections(log) is None
