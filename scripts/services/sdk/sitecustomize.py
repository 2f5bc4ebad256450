"""Compatibility shim for huaweicloud-sdk-python 1.0.28 on Python >= 3.10 (installed into the SDK test venv only).

The SDK (and the keystoneauth1 3.4 it pins) still uses the ABC aliases ``collections.Mapping``,
``collections.MutableMapping``, ... that Python 3.10 removed (they live in ``collections.abc`` since 3.3).
Python imports ``sitecustomize`` at start-up, so putting this file in the venv's site-packages restores the
aliases before the SDK is imported. Nothing else is changed.
"""

import collections
import collections.abc

for _name in (
    "Callable", "Container", "Hashable", "ItemsView", "Iterable", "Iterator", "KeysView", "Mapping",
    "MappingView", "MutableMapping", "MutableSequence", "MutableSet", "Sequence", "Set", "Sized", "ValuesView",
):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))
