"""The generated CEF renderers write exactly what the reference rules write.

``cef_render.renderer_for`` caches rendered groups of repeating values and writes plain
per-event values directly; ``render_extension`` is the rule book. These properties run both
on the same hostile values (escapes, over-long text, numbers and lists where text was
expected, equal values of different types) and twice, so cached groups are checked too.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditstream.formats import compiled
from auditstream.formats.cef import CefEncoder
from auditstream.formats.cef_mapping import (
    ACTIVITY_LAYOUT,
    GENERIC_LAYOUT,
    QUERY_LAYOUT,
    Layout,
    history_mapper,
    map_activity,
    map_generic,
    map_query,
    map_replay,
    map_secret_log,
)
from auditstream.formats.cef_render import render_extension, renderer_for, source_of
from auditstream.formats.events import history_entity_key
from auditstream.sdm.registry import STREAMS
from tests.formats import samples

HISTORY_LAYOUT = history_mapper("roles_history", "role", False)(
    {"logType": "roles_history", "role": {"id": "r-1"}}
)[4]
LAYOUTS = [ACTIVITY_LAYOUT, QUERY_LAYOUT, GENERIC_LAYOUT, HISTORY_LAYOUT]


class Text(str):
    """A str subclass (a StrEnum member, say): written as its text, like a str."""


special = st.sampled_from(
    ["", "a=b", "\\", "\n", "\r", "x" * 1100, "y" * 4100, "1", "true", " ", "é", "\x00"]
)
text = st.one_of(
    special,
    st.text(max_size=30),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=3), st.integers(1, 1500)),
)
value = st.one_of(
    text,
    text,
    st.none(),
    st.integers(-3, 3),
    st.booleans(),
    st.floats(allow_nan=False),
    st.lists(st.integers(-1000, 1000), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(-1000, 1000), max_size=2),
    text.map(Text),
)
number = st.one_of(st.none(), st.integers(), st.booleans(), st.text(max_size=5), st.floats(allow_nan=False))


@st.composite
def layout_values(draw: Any) -> tuple[Layout, tuple[Any, ...], tuple[Any, ...]]:
    """A layout and values for it, grouped the way its mapper returns them."""
    layout = draw(st.sampled_from(LAYOUTS))
    numbers = tuple(draw(number) for _ in layout.number_keys)
    strings = tuple(
        draw(value) if stop - start == 1 else tuple(draw(value) for _ in range(start, stop))
        for start, stop, _ in layout.groups
    )
    return layout, numbers, strings


def reference(layout: Layout, numbers: tuple[Any, ...], strings: tuple[Any, ...]) -> str:
    return render_extension(
        list(zip(layout.string_keys, layout.flatten(strings), strict=True)),
        list(zip(layout.number_keys, numbers, strict=True)),
        layout,
    )


@given(layout_values())
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_generated_renderer_matches_the_reference(
    case: tuple[Layout, tuple[Any, ...], tuple[Any, ...]],
) -> None:
    layout, numbers, strings = case
    expected = reference(layout, numbers, strings)
    render = renderer_for(layout)
    assert render(numbers, strings) == expected
    assert render(numbers, strings) == expected  # second time from the group caches


def test_equal_values_of_other_types_never_share_a_cached_group() -> None:
    """1 == True == 1.0 as dict keys: only plain-text groups are cached, so each stays itself."""
    render = renderer_for(GENERIC_LAYOUT)
    for cat in ("1", 1, True, 1.0, "1"):
        strings = (cat, "id-1", "id-1")  # generic: cat is a cached one-key group
        assert render((None,), strings) == reference(GENERIC_LAYOUT, (None,), strings)


def test_generated_source_is_readable() -> None:
    source = source_of(ACTIVITY_LAYOUT)
    assert source.startswith("def render(numbers, strings):")
    assert "# act, outcome, suser, suid" in source
    assert "'cat=activities'" in source  # the stream of a mapper is a constant


def test_encoder_lines_do_not_depend_on_cache_state() -> None:
    """The same event gives the same line before and after its groups are cached."""
    encoder = CefEncoder(device_version="t")
    for event in samples.all_sample_events().values():
        first = encoder.encode(event)
        assert encoder.encode(event) == first
        assert CefEncoder(device_version="t").encode(dict(event)) == first


def test_every_mapper_returns_its_values_in_the_shape_of_its_layout() -> None:
    """Mapper and layout come from one table: every key has its value, every group its tuple."""
    for name, spec in STREAMS.items():
        event = samples.sample_event(name)
        if name == "activities":
            mapped = map_activity(event)
        elif name == "queries":
            mapped = map_query(event)
        elif name == "managed_secret_logs":
            mapped = map_secret_log(event)
        elif name == "replays":
            mapped = map_replay(event)
        else:
            entity = spec.record_class.DESCRIPTOR.fields_by_name[spec.entity_field].message_type
            mapped = history_mapper(name, history_entity_key(spec), compiled.is_polymorphic(entity))(event)
        _, _, numbers, strings, layout = mapped
        assert len(numbers) == len(layout.number_keys), name
        assert len(strings) == len(layout.groups), name
        for (start, stop, _), value in zip(layout.groups, strings, strict=True):
            assert stop - start == 1 or len(value) == stop - start, (name, layout.string_keys[start:stop])
        assert len(layout.flatten(strings)) == len(layout.string_keys), name
    _, _, numbers, strings, layout = map_generic({"logType": "x"})
    assert (len(numbers), len(strings)) == (len(layout.number_keys), len(layout.groups))
