"""Layered configuration: a policy file's overrides merged into its defaults, key by key."""

from __future__ import annotations

import copy
from typing import Mapping


def deep_merge(base: dict, override: Mapping) -> dict:
    """A copy of `base` with `override` applied: nested mappings merge, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
