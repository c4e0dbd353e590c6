"""Species lists (``species_mask.from_names``): eBird codes resolve through the eBird/Clements taxonomy."""
import pytest

from birdcore.serving.species_mask import from_names, read_species_list


@pytest.fixture(scope="module")
def birdnet_species():
    from birdcore.runs.loading import birdnet_run as global_birdnet_run

    return global_birdnet_run().species  # ebird_code there is the scientific name


def test_ebird_codes_keep_those_species_of_birdnet(tmp_path, birdnet_species):
    listing = tmp_path / "codes.txt"
    listing.write_text("amerob\nNORCAR  # upper case too\nbkcchi\n", encoding="utf-8")
    mask = from_names(birdnet_species, read_species_list(listing))
    kept = set(birdnet_species["sci_name"][mask.keep])
    assert kept == {"Turdus migratorius", "Cardinalis cardinalis", "Poecile atricapillus"}


def test_a_code_retired_by_a_later_taxonomy_still_resolves(birdnet_species):
    # Pacific-slope Flycatcher's code was dropped when it was lumped into Western Flycatcher (2023)
    mask = from_names(birdnet_species, ["pasfly"])
    assert list(birdnet_species["sci_name"][mask.keep]) == ["Empidonax difficilis"]


def test_names_matching_nothing_are_still_reported(birdnet_species):
    with pytest.raises(ValueError, match=r"2 name\(s\) match no species.*zzzzzz, Dodo"):
        from_names(birdnet_species, ["amerob", "zzzzzz", "Dodo"])
