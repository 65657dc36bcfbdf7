import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExpectedVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPECTED_VERSION_UNSPECIFIED: _ClassVar[ExpectedVersion]
    EXPECTED_VERSION_ANY: _ClassVar[ExpectedVersion]
    EXPECTED_VERSION_NO_KEY: _ClassVar[ExpectedVersion]
    EXPECTED_VERSION_EXISTS: _ClassVar[ExpectedVersion]
    EXPECTED_VERSION_EXACT: _ClassVar[ExpectedVersion]

class AppendOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    APPEND_OUTCOME_UNSPECIFIED: _ClassVar[AppendOutcome]
    APPEND_OUTCOME_STORED: _ClassVar[AppendOutcome]
    APPEND_OUTCOME_DUPLICATE_EVENT_ID: _ClassVar[AppendOutcome]
    APPEND_OUTCOME_DUPLICATE_CONTENT: _ClassVar[AppendOutcome]
EXPECTED_VERSION_UNSPECIFIED: ExpectedVersion
EXPECTED_VERSION_ANY: ExpectedVersion
EXPECTED_VERSION_NO_KEY: ExpectedVersion
EXPECTED_VERSION_EXISTS: ExpectedVersion
EXPECTED_VERSION_EXACT: ExpectedVersion
APPEND_OUTCOME_UNSPECIFIED: AppendOutcome
APPEND_OUTCOME_STORED: AppendOutcome
APPEND_OUTCOME_DUPLICATE_EVENT_ID: AppendOutcome
APPEND_OUTCOME_DUPLICATE_CONTENT: AppendOutcome

class AppendEvent(_message.Message):
    __slots__ = ("key", "type", "content_type", "headers", "payload", "event_id", "expected", "expected_key_version", "tombstone")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONE_FIELD_NUMBER: _ClassVar[int]
    key: str
    type: str
    content_type: str
    headers: _containers.ScalarMap[str, str]
    payload: bytes
    event_id: str
    expected: ExpectedVersion
    expected_key_version: int
    tombstone: bool
    def __init__(self, key: _Optional[str] = ..., type: _Optional[str] = ..., content_type: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., payload: _Optional[bytes] = ..., event_id: _Optional[str] = ..., expected: _Optional[_Union[ExpectedVersion, str]] = ..., expected_key_version: _Optional[int] = ..., tombstone: _Optional[bool] = ...) -> None: ...

class AppendRequest(_message.Message):
    __slots__ = ("topic", "events", "dedup_by_content")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    DEDUP_BY_CONTENT_FIELD_NUMBER: _ClassVar[int]
    topic: str
    events: _containers.RepeatedCompositeFieldContainer[AppendEvent]
    dedup_by_content: bool
    def __init__(self, topic: _Optional[str] = ..., events: _Optional[_Iterable[_Union[AppendEvent, _Mapping]]] = ..., dedup_by_content: _Optional[bool] = ...) -> None: ...

class AppendResult(_message.Message):
    __slots__ = ("partition", "sequence", "cursor", "key_version", "transaction_id", "outcome", "deduplicated")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATED_FIELD_NUMBER: _ClassVar[int]
    partition: int
    sequence: int
    cursor: str
    key_version: int
    transaction_id: int
    outcome: AppendOutcome
    deduplicated: bool
    def __init__(self, partition: _Optional[int] = ..., sequence: _Optional[int] = ..., cursor: _Optional[str] = ..., key_version: _Optional[int] = ..., transaction_id: _Optional[int] = ..., outcome: _Optional[_Union[AppendOutcome, str]] = ..., deduplicated: _Optional[bool] = ...) -> None: ...

class AppendResponse(_message.Message):
    __slots__ = ("transaction_id", "results")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    transaction_id: int
    results: _containers.RepeatedCompositeFieldContainer[AppendResult]
    def __init__(self, transaction_id: _Optional[int] = ..., results: _Optional[_Iterable[_Union[AppendResult, _Mapping]]] = ...) -> None: ...

class InvalidationMarker(_message.Message):
    __slots__ = ("transaction_id", "reason")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    transaction_id: int
    reason: str
    def __init__(self, transaction_id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("partition", "sequence", "cursor", "transaction_id", "key", "key_version", "event_id", "type", "content_type", "headers", "payload", "tombstone", "committed_at", "transaction_invalidated", "invalidation")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONE_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_INVALIDATED_FIELD_NUMBER: _ClassVar[int]
    INVALIDATION_FIELD_NUMBER: _ClassVar[int]
    partition: int
    sequence: int
    cursor: str
    transaction_id: int
    key: str
    key_version: int
    event_id: str
    type: str
    content_type: str
    headers: _containers.ScalarMap[str, str]
    payload: bytes
    tombstone: bool
    committed_at: _timestamp_pb2.Timestamp
    transaction_invalidated: bool
    invalidation: InvalidationMarker
    def __init__(self, partition: _Optional[int] = ..., sequence: _Optional[int] = ..., cursor: _Optional[str] = ..., transaction_id: _Optional[int] = ..., key: _Optional[str] = ..., key_version: _Optional[int] = ..., event_id: _Optional[str] = ..., type: _Optional[str] = ..., content_type: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., payload: _Optional[bytes] = ..., tombstone: _Optional[bool] = ..., committed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., transaction_invalidated: _Optional[bool] = ..., invalidation: _Optional[_Union[InvalidationMarker, _Mapping]] = ...) -> None: ...

class ReadPartitionRequest(_message.Message):
    __slots__ = ("topic", "partition", "cursor", "max_events", "wait_ms", "follow", "types", "heartbeat_ms")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    MAX_EVENTS_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_MS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    cursor: str
    max_events: int
    wait_ms: int
    follow: bool
    types: _containers.RepeatedScalarFieldContainer[str]
    heartbeat_ms: int
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., cursor: _Optional[str] = ..., max_events: _Optional[int] = ..., wait_ms: _Optional[int] = ..., follow: _Optional[bool] = ..., types: _Optional[_Iterable[str]] = ..., heartbeat_ms: _Optional[int] = ...) -> None: ...

class ReadPartitionResponse(_message.Message):
    __slots__ = ("events", "cursor", "caught_up", "partition")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    cursor: str
    caught_up: bool
    partition: int
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., cursor: _Optional[str] = ..., caught_up: _Optional[bool] = ..., partition: _Optional[int] = ...) -> None: ...

class PartitionCursor(_message.Message):
    __slots__ = ("partition", "cursor")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    partition: int
    cursor: str
    def __init__(self, partition: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class SurfaceRequest(_message.Message):
    __slots__ = ("topic", "key_prefix", "after_key", "limit", "as_of_transaction")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    KEY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    AFTER_KEY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    AS_OF_TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    topic: str
    key_prefix: str
    after_key: str
    limit: int
    as_of_transaction: int
    def __init__(self, topic: _Optional[str] = ..., key_prefix: _Optional[str] = ..., after_key: _Optional[str] = ..., limit: _Optional[int] = ..., as_of_transaction: _Optional[int] = ...) -> None: ...

class SurfaceResponse(_message.Message):
    __slots__ = ("events", "cursors", "as_of_transaction", "next_after_key")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    CURSORS_FIELD_NUMBER: _ClassVar[int]
    AS_OF_TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_KEY_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    cursors: _containers.RepeatedCompositeFieldContainer[PartitionCursor]
    as_of_transaction: int
    next_after_key: str
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., cursors: _Optional[_Iterable[_Union[PartitionCursor, _Mapping]]] = ..., as_of_transaction: _Optional[int] = ..., next_after_key: _Optional[str] = ...) -> None: ...

class ReadKeyRequest(_message.Message):
    __slots__ = ("topic", "key", "from_version", "max_events")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_EVENTS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    key: str
    from_version: int
    max_events: int
    def __init__(self, topic: _Optional[str] = ..., key: _Optional[str] = ..., from_version: _Optional[int] = ..., max_events: _Optional[int] = ...) -> None: ...

class ReadKeyResponse(_message.Message):
    __slots__ = ("events", "current_version")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    current_version: int
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., current_version: _Optional[int] = ...) -> None: ...

class InvalidateRequest(_message.Message):
    __slots__ = ("topic", "transaction_id", "reason")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    topic: str
    transaction_id: int
    reason: str
    def __init__(self, topic: _Optional[str] = ..., transaction_id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class InvalidateResponse(_message.Message):
    __slots__ = ("marker_transaction_id", "markers", "already_invalidated")
    MARKER_TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    MARKERS_FIELD_NUMBER: _ClassVar[int]
    ALREADY_INVALIDATED_FIELD_NUMBER: _ClassVar[int]
    marker_transaction_id: int
    markers: _containers.RepeatedCompositeFieldContainer[AppendResult]
    already_invalidated: bool
    def __init__(self, marker_transaction_id: _Optional[int] = ..., markers: _Optional[_Iterable[_Union[AppendResult, _Mapping]]] = ..., already_invalidated: _Optional[bool] = ...) -> None: ...

class PartitionInfo(_message.Message):
    __slots__ = ("partition", "head_cursor", "event_count")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    HEAD_CURSOR_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    partition: int
    head_cursor: str
    event_count: int
    def __init__(self, partition: _Optional[int] = ..., head_cursor: _Optional[str] = ..., event_count: _Optional[int] = ...) -> None: ...

class Topic(_message.Message):
    __slots__ = ("name", "partition_count", "created_at", "last_transaction_id", "event_count", "partitions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARTITION_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    partition_count: int
    created_at: _timestamp_pb2.Timestamp
    last_transaction_id: int
    event_count: int
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionInfo]
    def __init__(self, name: _Optional[str] = ..., partition_count: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_transaction_id: _Optional[int] = ..., event_count: _Optional[int] = ..., partitions: _Optional[_Iterable[_Union[PartitionInfo, _Mapping]]] = ...) -> None: ...

class CreateTopicRequest(_message.Message):
    __slots__ = ("name", "partition_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARTITION_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    partition_count: int
    def __init__(self, name: _Optional[str] = ..., partition_count: _Optional[int] = ...) -> None: ...

class CreateTopicResponse(_message.Message):
    __slots__ = ("topic", "created")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    topic: Topic
    created: bool
    def __init__(self, topic: _Optional[_Union[Topic, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class GetTopicRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetTopicResponse(_message.Message):
    __slots__ = ("topic",)
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    topic: Topic
    def __init__(self, topic: _Optional[_Union[Topic, _Mapping]] = ...) -> None: ...

class ListTopicsRequest(_message.Message):
    __slots__ = ("name_prefix", "after_name", "limit")
    NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    AFTER_NAME_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    name_prefix: str
    after_name: str
    limit: int
    def __init__(self, name_prefix: _Optional[str] = ..., after_name: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListTopicsResponse(_message.Message):
    __slots__ = ("topics", "next_after_name")
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_NAME_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedCompositeFieldContainer[Topic]
    next_after_name: str
    def __init__(self, topics: _Optional[_Iterable[_Union[Topic, _Mapping]]] = ..., next_after_name: _Optional[str] = ...) -> None: ...
