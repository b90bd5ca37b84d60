"""The InpaintCOCO rules on real COCO photographs: licences never offered, objects kept within their
super-category, captions that must change; each refusal says what to do instead."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from _inpaint_fixtures import catalog  # noqa: F401
from hf_hardneg.data.inpaintcoco import NO_DERIVS_LICENSE_IDS
from hf_hardneg.inpaint.rules import (
    ObjectChange,
    RuleViolation,
    check_coco_caption,
    check_concept,
    check_licence,
    check_new_caption,
    check_object_change,
    check_quality,
    read_number,
)

pytestmark = pytest.mark.coco
DOG_AND_HYDRANT = 377575  # "A dog is tied to a fire hydrant." (licence 4, instances: dog, fire hydrant)


def _licences(coco_mini) -> Counter:
    data = json.loads((coco_mini / "annotations" / "captions_val2017.json").read_text())
    return Counter(img["license"] for img in data["images"])


# -- licences -------------------------------------------------------------------------------
@pytest.mark.parametrize("concept", ["object", "color", "size"])
def test_noderivs_photographs_are_never_offered(catalog, coco_mini, concept):
    pool = catalog.pool(concept)
    assert pool.image_ids, "coco-mini offers photographs for every concept"
    assert not {catalog.photo(i).license_id for i in pool.image_ids} & NO_DERIVS_LICENSE_IDS
    licences = _licences(coco_mini)
    assert pool.held_back["noderivs_license"] == sum(licences[i] for i in NO_DERIVS_LICENSE_IDS)
    # everything is accounted for: offered + held back = every photograph of the captions file
    assert len(pool.image_ids) + sum(pool.held_back.values()) == sum(licences.values())
    assert "noderivs_license" in pool.describe()


def test_pool_order_is_fixed_by_the_seed(catalog):
    assert catalog.pool("color", seed=3).image_ids == catalog.pool("color", seed=3).image_ids
    assert catalog.pool("color", seed=3).image_ids != catalog.pool("color", seed=4).image_ids
    assert sorted(catalog.pool("color", seed=3).image_ids) == sorted(catalog.pool("color", seed=4).image_ids)


@pytest.mark.parametrize("licence", sorted(NO_DERIVS_LICENSE_IDS))
def test_a_noderivs_photograph_is_refused_naming_its_licence(catalog, licence):
    image_id = next(i for i in sorted(catalog.index.images) if catalog.photo(i).license_id == licence)
    photo = catalog.photo(image_id)
    with pytest.raises(RuleViolation, match=rf"licence {licence} \(.*NoDerivs License\), which forbids derivative"):
        check_licence(photo)
    assert check_licence(catalog.photo(DOG_AND_HYDRANT)) is None


# -- objects within their super-category ----------------------------------------------------------
def test_an_object_is_replaced_within_its_supercategory(catalog):
    photo = catalog.photo(DOG_AND_HYDRANT)
    assert check_object_change(catalog, photo, "object", "dog", "a fluffy cat") == ObjectChange("dog", "cat")
    assert check_object_change(catalog, photo, "object", "the poodle", "x", category="dog", replacement="horse") == (
        ObjectChange("dog", "horse"))
    # the paper's spellings are COCO categories too
    assert check_object_change(catalog, photo, "object", "fire hydrant", "a bench").replacement == "bench"


def test_a_replacement_from_another_supercategory_is_refused_with_the_allowed_names(catalog):
    photo = catalog.photo(DOG_AND_HYDRANT)
    with pytest.raises(RuleViolation) as err:
        check_object_change(catalog, photo, "object", "dog", "a red bus")
    assert err.value.reason == "outside_supercategory"
    message = str(err.value)
    assert "'bus' (vehicle) cannot replace 'dog'" in message and "super-category 'animal'" in message
    animals = [n for n in catalog.same_supercategory("dog")]
    assert f"allowed: {', '.join(animals)}" in message and "cat" in animals and "dog" not in animals
    with pytest.raises(RuleViolation, match=r"'couch' \(furniture\) cannot replace 'dog'"):  # sofa = couch
        check_object_change(catalog, photo, "object", "dog", "x", replacement="sofa")


def test_unclear_object_edits_are_refused_with_what_to_say(catalog):
    photo = catalog.photo(DOG_AND_HYDRANT)
    with pytest.raises(RuleViolation, match="names no COCO object to put in place of 'dog'.*cat") as err:
        check_object_change(catalog, photo, "object", "dog", "a small puppy")
    assert err.value.reason == "unknown_object"
    with pytest.raises(RuleViolation, match=r"names several COCO objects \(dog, fire hydrant\)"):
        check_object_change(catalog, photo, "object", "dog by the fire hydrant", "a cat")
    with pytest.raises(RuleViolation, match="new object is again 'dog'"):
        check_object_change(catalog, photo, "object", "dog", "x", replacement="dog")
    with pytest.raises(RuleViolation, match="'unicorn' is not one of COCO's 80 categories"):
        check_object_change(catalog, photo, "object", "dog", "x", replacement="unicorn")
    person = next(i for i in sorted(catalog.index.images) if "person" in catalog.photo(i).categories)
    with pytest.raises(RuleViolation, match="'person' is the only COCO category of the super-category 'person'"):
        check_object_change(catalog, catalog.photo(person), "object", "person", "a woman", category="person")


def test_things_that_are_no_coco_object_are_not_checked(catalog):
    photo = catalog.photo(DOG_AND_HYDRANT)
    assert check_object_change(catalog, photo, "object", "red jacket", "blue coat") == ObjectChange(None, None)
    # colour and size edits only record which object changed
    assert check_object_change(catalog, photo, "color", "fire hydrant", "yellow fire hydrant") == (
        ObjectChange("fire hydrant"))
    assert check_object_change(catalog, photo, "size", "dog by the fire hydrant", "tiny dog") == ObjectChange(None)
    with pytest.raises(RuleViolation, match="no location subset"):
        check_object_change(catalog, photo, "location", "dog", "dog")


# -- captions, ratings, numbers --------------------------------------------------------------------
def test_an_unchanged_or_empty_new_caption_is_refused():
    original = "A dog is tied to a fire hydrant."
    assert check_new_caption(original, " A dog is tied to a yellow fire hydrant. ") == (
        original, "A dog is tied to a yellow fire hydrant.")
    with pytest.raises(RuleViolation, match="equals the original") as err:
        check_new_caption(original, "a dog is tied  to a FIRE hydrant")
    assert err.value.reason == "unchanged_caption"
    with pytest.raises(RuleViolation, match="new caption is empty") as err:
        check_new_caption(original, "   ")
    assert err.value.reason == "empty_caption"
    with pytest.raises(RuleViolation, match="choose the COCO caption"):
        check_new_caption("", "A cat.")


def test_the_original_caption_must_be_one_of_cocos(catalog):
    photo = catalog.photo(DOG_AND_HYDRANT)
    assert check_coco_caption(photo, "a dog is tied to a fire hydrant") == "A dog is tied to a fire hydrant."
    with pytest.raises(RuleViolation, match="is not one of the COCO captions of image 377575") as err:
        check_coco_caption(photo, "A dog waits by a hydrant.")
    assert err.value.reason == "caption_not_from_coco"


def test_ratings_and_concepts():
    assert check_quality("Very-Good") == "very good" and check_quality(" okay ") == "okay"
    with pytest.raises(RuleViolation, match="'great' is not one of 'very good', 'okay'"):
        check_quality("great")
    assert check_concept(" Color ") == "color"


@pytest.mark.parametrize("value", ["abc", True, 2.5, "nan", [1]])
def test_numbers_that_are_not_are_refused(value):
    with pytest.raises(RuleViolation, match=r"seed=.* is not a whole number"):
        read_number({"seed": value}, "seed", int)


def test_numbers_read_from_text_or_json():
    assert read_number({"a": " 3 "}, "a", int) == 3 and read_number({"a": 3.0}, "a", int) == 3
    assert read_number({"a": "0.25"}, "a", float) == 0.25
    assert read_number({"a": ""}, "a", float, 0.4) == 0.4 and read_number({}, "a", int) is None
