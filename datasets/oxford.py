"""Facts of the Oxford-IIIT Pet data set that the whole project shares (one home for each).

- Trimap pixel values: 1 = the pet (foreground), 2 = background, 3 = unknown (the boundary band,
  ignored by the loss and the metrics).
- The 37 breeds and the naming rule: files are called ``<Breed>_<number>``; cat breeds are
  capitalised (``Abyssinian_1``), dog breeds are lower case (``beagle_1``). The class of the
  animal comes from the first letter of the file name (SPEC.md), which is only meaningful for
  names of that form: ``IMG_0001.jpg`` would be a cat and ``0001.jpg`` a dog. ``breed_of`` tells
  which names follow the rule, so that readers can report how many did not.
"""
from __future__ import annotations

import os

TRIMAP_FOREGROUND, TRIMAP_BACKGROUND, TRIMAP_UNKNOWN = 1, 2, 3
TRIMAP_VALUES = (TRIMAP_FOREGROUND, TRIMAP_BACKGROUND, TRIMAP_UNKNOWN)

CAT_BREEDS = (
    "Abyssinian", "Bengal", "Birman", "Bombay", "British_Shorthair", "Egyptian_Mau",
    "Maine_Coon", "Persian", "Ragdoll", "Russian_Blue", "Siamese", "Sphynx",
)
DOG_BREEDS = (
    "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle", "boxer",
    "chihuahua", "english_cocker_spaniel", "english_setter", "german_shorthaired",
    "great_pyrenees", "havanese", "japanese_chin", "keeshond", "leonberger",
    "miniature_pinscher", "newfoundland", "pomeranian", "pug", "saint_bernard", "samoyed",
    "scottish_terrier", "shiba_inu", "staffordshire_bull_terrier", "wheaten_terrier",
    "yorkshire_terrier",
)
_BREEDS = frozenset(CAT_BREEDS + DOG_BREEDS)


def is_cat_name(name: str) -> bool:
    """The data set's class rule: a file name starting with an upper-case letter is a cat
    (``Abyssinian_1.jpg``), anything else a dog (``beagle_1.jpg``, also ``1.jpg``)."""
    return name[:1].isupper()


def breed_of(name: str) -> str | None:
    """The Oxford breed of a file named ``<breed>_<number>[.ext]`` (exact spelling and case,
    so the capital-letter rule agrees with the breed), else None.

    ``breed_of("British_Shorthair_12.jpg") == "British_Shorthair"``;
    ``breed_of("IMG_0001.jpg")``, ``breed_of("beagle.jpg")`` and ``breed_of("Beagle_1.jpg")`` are
    None.
    """
    stem = os.path.splitext(os.path.basename(name))[0]
    breed, underscore, number = stem.rpartition("_")
    if underscore and number.isdigit() and breed in _BREEDS:
        return breed
    return None
