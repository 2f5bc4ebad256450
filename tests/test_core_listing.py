"""The ``sort`` parameter of the list calls (core/listing.py): pairs, default direction, and the two wordings of
its refusals (the backup listing's and the policy listing's, as clients have always read them)."""

import pytest

from opencsbs.core.errors import CSBSError
from opencsbs.core.listing import parse_sort

KEYS = ("created_at", "name", "id")


def test_pairs_default_to_descending():
    assert parse_sort("name:ASC, created_at", KEYS, [("id", True)]) == [("name", False), ("created_at", True)]
    assert parse_sort(None, KEYS, [("id", True)]) == [("id", True)]
    assert parse_sort("", KEYS, [("id", True)]) == [("id", True)]


@pytest.mark.parametrize(("text", "message"), [
    ("size", "sort key 'size' is not one of created_at, name, id"),
    ("name:up", "sort direction 'up' is not asc or desc"),
    ("name,name:asc", "sort key 'name' given twice"),
    ("n" * 256, "sort is longer than 255 characters"),
])
def test_backup_listing_wording(text, message):
    with pytest.raises(CSBSError) as caught:
        parse_sort(text, KEYS, [])
    assert caught.value.body() == {"error_code": "CSBS.9001", "error_msg": f"Invalid request parameters: {message}"}


def test_policy_listing_wording_names_the_whole_part_and_takes_a_key_twice():
    with pytest.raises(CSBSError) as caught:
        parse_sort("name:up", KEYS, [], one_message=True)
    assert caught.value.error_msg == ("Invalid request parameters: sort 'name:up' is not <key>[:asc|desc] with key "
                                      "one of created_at, name, id")
    assert parse_sort("name,name:asc", KEYS, [], one_message=True) == [("name", True), ("name", False)]
