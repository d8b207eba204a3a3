import pytest
from hypothesis import given, strategies as st

from smvm.errors import InvalidArgument
from smvm.ids import check_id, new_run_id, run_id_from, validation_id


@pytest.mark.parametrize("value", ["PROJ-2024-001", "RUN-20241201-143052-a1b2c3d4", "a", "x.y_z-1"])
def test_safe_ids_pass(value):
    assert check_id("run_id", value) == value


@pytest.mark.parametrize("value", ["", "..", "../etc", "a/b", "a\\b", ".hidden", "a..b", "-x", "x" * 129, "a b", "é", "RUN-1\n", "RUN-1\x00", "RUN-1\r\n"])
def test_unsafe_ids_are_refused_naming_the_field(value):
    with pytest.raises(InvalidArgument) as err:
        check_id("project_id", value)
    assert err.value.field == "project_id"


@given(st.text(min_size=1, max_size=40))
def test_no_accepted_id_can_escape_a_directory(value):
    try:
        check_id("run_id", value)
    except InvalidArgument:
        return
    assert "/" not in value and "\\" not in value and ".." not in value and not value.startswith(".")


def test_generated_run_ids_are_safe_and_unique():
    ids = {new_run_id() for _ in range(100)}
    assert len(ids) == 100
    for run_id in ids:
        assert check_id("run_id", run_id) == run_id
        assert run_id_from(validation_id(run_id)) == run_id
