"""The one place that uses a private orbax name: the array metadata store that orbax's default
`ArrayHandler` is built with (it keeps typed PRNG keys typed on restore). checkpoint.py registers
its own ArrayHandler (replica-parallel writes only across hosts) and must pass the same store;
orbax exports no public constructor for it. An orbax upgrade that moves the name fails
tests/test_adapters.py by name.
"""
from __future__ import annotations

from orbax.checkpoint._src.metadata import array_metadata_store


def array_metadata_store_of_default_handler():
    """A new instance of the metadata store orbax's default ArrayHandler uses."""
    return array_metadata_store.Store()
