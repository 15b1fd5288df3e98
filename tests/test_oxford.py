"""datasets/oxford.py: the data set's naming rule and breeds."""
from __future__ import annotations

import pytest

from datasets.oxford import (CAT_BREEDS, DOG_BREEDS, TRIMAP_VALUES, breed_of, is_cat_name)


def test_the_37_breeds_cats_capitalised_dogs_lower_case():
    assert (len(CAT_BREEDS), len(DOG_BREEDS)) == (12, 25)
    assert all(is_cat_name(b) for b in CAT_BREEDS)
    assert not any(is_cat_name(b) for b in DOG_BREEDS)
    assert TRIMAP_VALUES == (1, 2, 3)


@pytest.mark.parametrize("name, breed, cat", [
    ("Abyssinian_1.jpg", "Abyssinian", True),
    ("British_Shorthair_12.jpg", "British_Shorthair", True),
    ("staffordshire_bull_terrier_2.JPG", "staffordshire_bull_terrier", False),
    ("IMG_0001.jpg", None, True),         # the rule's classic mistake: a "cat"
    ("0001.jpg", None, False),            # and a "dog"
    ("Beagle_1.jpg", None, True),         # a dog breed spelled like a cat: not a known name
    ("beagle.jpg", None, False),          # no number
    ("beagle_1a.jpg", None, False),
    ("Ünlü_köpek_3.png", None, True),     # non-ASCII: isupper() of the first letter
])
def test_breed_of_knows_only_exact_breed_number_names(name, breed, cat):
    assert breed_of(name) == breed
    assert is_cat_name(name) is cat
