"""The auditor's quick reads of what the node writes (entry lines, canonical envelopes,
canonical statements) agree with reading the same bytes as JSON, and leave anything
else to it."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attestation.audit import verify_bundle
from attestation.bundle import _entry_lines, entry_line, unb64
from attestation.dsse import STATEMENT_TYPE, Envelope, Signature
from attestation.errors import FormatError, VerificationError
from attestation.keys import NodeKey
from attestation.schema import EXPERIMENT_PREDICATE, NodeEventKind
from node.store import Store
from node.tlog.log import NodeLog
from node.tlog.records import EVENT_KIND, EXPERIMENT_KIND, event_statement


def _as_json(data: bytes) -> Envelope | str:
    """What `from_bytes` returned before it had a quick read: the envelope, or the error."""
    try:
        return Envelope.from_json(json.loads(data))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return f"the DSSE envelope is not JSON: {exc}"
    except FormatError as exc:
        return str(exc)


def _read(data: bytes) -> Envelope | str:
    try:
        return Envelope.from_bytes(data)
    except FormatError as exc:
        return str(exc)


printable = st.text(st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=20)


@given(st.binary(max_size=300), printable, printable, st.binary(max_size=70))
def test_a_canonical_envelope_reads_as_its_json_does(
    payload: bytes, payload_type: str, keyid: str, sig: bytes
) -> None:
    try:
        envelope = Envelope(payload_type, payload, (Signature(keyid, sig),))
    except FormatError:
        return
    data = envelope.to_bytes()
    assert Envelope.from_bytes(data) == envelope == _as_json(data)


@pytest.mark.parametrize(
    "data",
    [
        # JSON escapes inside the base64 texts: JSON reads "QUJD" and "AA==".
        b'{"payload":"\\u0051UJD","payloadType":"t","signatures":[{"keyid":"k","sig":"AA=="}]}',
        b'{"payload":"QUJD","payloadType":"t","signatures":[{"keyid":"k","sig":"A\\u0041=="}]}',
        b'{"payload":"QU\\/D","payloadType":"t","signatures":[{"keyid":"k","sig":"AA=="}]}',
        b'{"payload":"QUJD","payloadType":"t\\n","signatures":[{"keyid":"\\"","sig":"AA=="}]}',
        # Not canonical: spaces, two signatures, bad base64, no payloadType, truncated.
        b'{"payload": "QUJD","payloadType":"t","signatures":[{"keyid":"k","sig":"AA=="}]}',
        b'{"payload":"QUJD","payloadType":"t","signatures":[{"keyid":"k","sig":"AA=="},'
        b'{"keyid":"j","sig":"AQ=="}]}',
        b'{"payload":"QUJ","payloadType":"t","signatures":[{"keyid":"k","sig":"AA=="}]}',
        b'{"payload":"QUJD","payloadType":"t","signatures":[{"keyid":"k","sig":"A="}]}',
        b'{"payload":"QUJD","payloadType":"","signatures":[{"keyid":"k","sig":"AA=="}]}',
        b'{"payload":"QUJD","payloadType":"t","signatures":[{"keyid":"k","sig":"AA=="}]',
        b'{"payload":"QUJD","payloadType":"t","signatures":[{"keyid":"k","sig":"AA=="}]} ',
        b'{"payload":"QUJD',
    ],
)
def test_an_envelope_the_quick_read_does_not_take_reads_as_json(data: bytes) -> None:
    assert _read(data) == _as_json(data)


@given(st.integers(0, 2**62), st.binary(max_size=200), st.booleans())
def test_an_entry_line_reads_as_its_json_does(index: int, envelope: bytes, last: bool) -> None:
    line = entry_line(index, envelope)
    line = line.rstrip(b"\n") if last else line
    raw = json.loads(line)
    assert list(_entry_lines(io.BytesIO(line))) == [(raw["index"], raw["envelope"])]


@pytest.mark.parametrize(
    "line",
    [
        b'{"index":3,"envelope":"QU\\/D"}\n',  # an escaped "/": JSON reads "QU/D"
        b'{"index":3,"envelope":"\\u0051UJD"}\n',
        b'{"index":3, "envelope":"QUJD"}\n',
        b'{"index":3,"envelope":"QUJD"}\r\n',
        b'{"envelope":"QUJD","index":3}\n',
    ],
)
def test_an_entry_line_written_otherwise_reads_as_json(line: bytes) -> None:
    raw = json.loads(line)
    assert list(_entry_lines(io.BytesIO(line))) == [(raw["index"], raw["envelope"])]


@pytest.mark.parametrize(
    "line",
    [
        b'{"index":03,"envelope":"QUJD"}\n',  # JSON has no leading zeros
        b'{"index":-3,"envelope":"QUJD"}\n',
        b'{"index":3,"envelope":"QU\nJD"}\n',
        b'{"index":3,"envelope":"QUJD"}}\n',
    ],
)
def test_a_malformed_entry_line_is_a_format_error(line: bytes) -> None:
    with pytest.raises(FormatError, match="bundle line 2"):
        list(_entry_lines(io.BytesIO(line)))


@pytest.mark.parametrize("byte", [b"\t", b"\x00", b"\xc3\xa9", b"\xff"])
def test_a_stray_byte_in_an_entrys_base64_fails_its_base64_check(byte: bytes) -> None:
    # Read without JSON: the byte stays in the text, and the envelope's decoding refuses it.
    line = b'{"index":3,"envelope":"QU' + byte + b'JD"}\n'
    [(index, text)] = _entry_lines(io.BytesIO(line))
    assert index == 3
    with pytest.raises(FormatError, match="entry 3 is not valid base64"):
        unb64(text, "entry 3")


def test_a_statement_naming_its_type_by_the_field_name_fails_the_envelope_step() -> None:
    # The schema's statement model also takes `type_` for `_type`; an in-toto statement
    # does not, and the audit says so at the envelope step, as it names any non-statement.
    key = NodeKey.generate()
    with Store.open("sqlite://") as store:
        tlog = NodeLog(store, key, checkpoint_every=1000)
        start = event_statement(
            tlog.node_id,
            NodeEventKind.CAMPAIGN_START,
            campaign_id="c-0000beef",
            config_hash="sha256:" + "ab" * 32,
        )
        tlog.append(EVENT_KIND, start)
        renamed = {("type_" if k == "_type" else k): v for k, v in start.items()}
        tlog.append(EVENT_KIND, renamed)
        tlog.checkpoint()
        data = tlog.export().to_bytes()
    assert renamed["type_"] == STATEMENT_TYPE
    with pytest.raises(VerificationError, match="not an in-toto") as caught:
        verify_bundle(data)
    assert caught.value.step == "envelope signatures"
    assert "entry 1" in caught.value.detail


def test_an_experiment_record_without_its_version_fails_the_schema_step() -> None:
    key = NodeKey.generate()
    with Store.open("sqlite://") as store:
        tlog = NodeLog(store, key, checkpoint_every=1000)
        stmt = {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": "candidate/c0", "digest": {"sha256": "ab" * 32}}],
            "predicateType": EXPERIMENT_PREDICATE,
            "predicate": {"node_id": tlog.node_id},
        }
        tlog.append(EXPERIMENT_KIND, stmt)
        tlog.checkpoint()
        data = tlog.export().to_bytes()
    with pytest.raises(VerificationError, match=r"predicate\.record_version: missing") as caught:
        verify_bundle(data)
    assert caught.value.step == "record schema"
