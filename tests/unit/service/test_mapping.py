"""Conversions between protobuf messages and the core's records."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

from google.protobuf import struct_pb2
from hypothesis import given, strategies as st

from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb, resources_pb2
from poet_grpc.api import mapping
from poet_grpc.core.enhancement import spec_hash
from poet_grpc.core.event_router import Checkpoint
from poet_grpc.core.models import EventRecord

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=6), JSON, max_size=6))
def test_fill_struct_builds_what_struct_update_builds(payload):
    expected = struct_pb2.Struct()
    expected.update(payload)
    built = struct_pb2.Struct()
    mapping.fill_struct(built, payload)
    assert built.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)


def test_fill_struct_keeps_empty_objects_and_lists_and_special_floats():
    built = struct_pb2.Struct()
    mapping.fill_struct(built, {"o": {}, "l": [], "t": (1, "a"), "inf": math.inf})
    assert built.fields["o"].WhichOneof("kind") == "struct_value"
    assert built.fields["l"].WhichOneof("kind") == "list_value"
    assert mapping.plain_fast(built) == {"o": {}, "l": [], "t": [1.0, "a"], "inf": math.inf}


def _record(position: int) -> EventRecord:
    return EventRecord(id=f"e-{position}", type="t.x", source="tests", timestamp=1.5, payload={"n": position},
                       metadata={"version": "1.0", "service": "poet", "environment": "test"}, position=position)


def test_stream_messages_convert_each_event_once_and_batch_them_in_order():
    messages = mapping.StreamMessages()
    records = [_record(p) for p in range(1, 6)]
    single = messages.get(records[0])
    assert messages.get(records[0]) is single  # shared by every subscriber
    assert single.event == mapping.event(records[0])
    batch = messages.batch(records)
    assert [e.position for e in batch.batch.events] == [1, 2, 3, 4, 5]
    assert list(batch.batch.events) == [mapping.event(r) for r in records]
    assert messages.get(Checkpoint(5, caught_up=True)).checkpoint.caught_up


def test_stream_messages_stay_within_their_budget():
    messages = mapping.StreamMessages(size=10)
    records = [_record(p) for p in range(1, 101)]
    for r in records:
        messages.get(r)
    assert len(messages._cache) <= 10
    # An evicted event is converted again, correctly.
    assert messages.get(records[0]).event.position == 1


def test_context_module_becomes_the_spec_module_and_part_of_its_identity():
    request = pb.EnhanceRequest(function_name="first", original_code="def first(): pass\n",
                                context=resources_pb2.EnhancementContext(module="mypkg.text", environment="prod"))
    spec = mapping.spec_from_enhance(request)
    assert (spec.module, spec.function_name, spec.identity) == ("mypkg.text", "first", "mypkg.text.first")
    assert "module" not in spec.context
    bare = mapping.spec_from_enhance(pb.EnhanceRequest(function_name="first", original_code="def first(): pass\n"))
    assert (bare.module, bare.identity) == ("", "first")
    assert spec_hash(spec) != spec_hash(bare)
    # A module-less spec hashes as before modules existed (stored content hashes stay valid).
    legacy = {k: v for k, v in dataclasses.asdict(bare).items() if k != "module"}
    assert spec_hash(bare) == hashlib.sha256(json.dumps(legacy, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
