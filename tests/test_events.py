"""The wire form of events: the fast path for text deltas writes exactly what pydantic writes."""

from __future__ import annotations

from ag_ui.core import TextMessageContentEvent
from hypothesis import given
from hypothesis import strategies as st

from tether import events


def test_the_fast_path_applies_to_this_ag_ui_version() -> None:
    assert events.FAST_TEXT_CONTENT


@given(
    message_id=st.text(min_size=1),
    delta=st.text(min_size=1),
    timestamp=st.integers(min_value=0, max_value=2**53 - 1),
)
def test_text_content_is_encoded_as_pydantic_encodes_it(message_id: str, delta: str, timestamp: int) -> None:
    event = TextMessageContentEvent(message_id=message_id, delta=delta, timestamp=timestamp)
    assert events.encode(event) == event.model_dump_json(by_alias=True, exclude_none=True)


def test_text_content_with_other_fields_takes_the_general_path() -> None:
    event = TextMessageContentEvent(message_id="m", delta="d", timestamp=1, raw_event={"x": 1})
    assert events.encode(event) == event.model_dump_json(by_alias=True, exclude_none=True)
    assert '"rawEvent"' in events.encode(event)
