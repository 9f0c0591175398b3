"""The runner socket formats its acks by hand (the hot path): they must stay
exactly what the protocol's model says."""

from cmbtask_gateway.api.ws_runner import _ACK
from cmbtask_protocol import RunnerAck


def test_the_formatted_ack_is_the_protocols_ack() -> None:
    for rseq in (0, 7, 2**31 - 1):
        assert RunnerAck.model_validate_json(_ACK % rseq) == RunnerAck(rseq=rseq)
        assert _ACK % rseq == RunnerAck(rseq=rseq).model_dump_json()
