"""The banner: what runs where (addresses only when they answer) and the suggestions."""

import socket

from switchboard.chat_cli.banner import SUGGESTIONS, banner, port_answers
from switchboard.chat_cli.settings import ChatCliSettings


def test_the_http_edge_and_traces_are_listed_only_when_they_answer() -> None:
    cfg = ChatCliSettings(target="gw:1", http_url="http://127.0.0.1:15080")
    closed = banner(cfg, answers=lambda url: False)
    assert "gRPC       gw:1" in closed
    assert "15080" not in closed and "traces" not in closed
    opened = banner(cfg, answers=lambda url: True)
    assert "HTTP       http://127.0.0.1:15080/v1" in opened
    assert "demo page  http://127.0.0.1:15080/" in opened
    assert "traces     http://127.0.0.1:9411" in opened
    for number, suggestion in enumerate(SUGGESTIONS, start=1):
        assert f"  {number}. {suggestion.message}\n" in opened


def test_port_answers_probes_a_real_socket() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_answers(f"http://127.0.0.1:{port}", 1.0)
    assert not port_answers(f"http://127.0.0.1:{port}", 1.0)
    assert not port_answers("not a url", 1.0)
