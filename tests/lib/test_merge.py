"""deep_merge: nested mappings merge, other values replace, the inputs stay untouched."""

from smvm.merge import deep_merge


def test_nested_mappings_merge_and_other_values_replace():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2}
    override = {"a": {"y": [3], "z": {"k": 1}}, "b": {"now": "a mapping"}}
    assert deep_merge(base, override) == {"a": {"x": 1, "y": [3], "z": {"k": 1}}, "b": {"now": "a mapping"}}


def test_inputs_are_not_modified_and_the_result_shares_nothing():
    base, override = {"a": {"x": [1]}}, {"a": {"y": [2]}}
    merged = deep_merge(base, override)
    merged["a"]["x"].append(9)
    merged["a"]["y"].append(9)
    assert base == {"a": {"x": [1]}} and override == {"a": {"y": [2]}}
