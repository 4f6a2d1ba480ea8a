"""A name -> value map over a binary's table that looks names up one at a time.

`_find(name)` searches the table for one name (None when absent) and `_all()` decodes the whole
table once; lookups use the first, iteration the second. keys/values/items come straight from
the decoded dict: Mapping's own would look every key up again.
"""
from collections.abc import Mapping


class LazyNameMap(Mapping):
    def _find(self, name):
        raise NotImplementedError

    def _all(self) -> dict:
        raise NotImplementedError

    def __getitem__(self, name):
        hit = self._find(name)
        if hit is None:
            raise KeyError(name)
        return hit

    def __contains__(self, name) -> bool:
        return self._find(name) is not None

    def __iter__(self):
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def keys(self):
        return self._all().keys()

    def values(self):
        return self._all().values()

    def items(self):
        return self._all().items()
