"""Which of a model's classes are birds.

BirdNET V2.4's 6,522 classes include 101 that are not birds: 11 sounds (``Engine``, ``Human vocal``,
``Dog``, ...) and 90 other animals (frogs, toads, crickets, katydids, a bee, squirrels, deer,
canids, a monkey).  Outputs mark them, and ``--birds-only`` (predict, the API, the classify page)
drops them.  The lists below are BirdNET V2.4's own scientific names (its label file); a test
checks them against that file and the eBird/Clements taxonomy (every other class is a bird the
taxonomy knows, by name or genus).  Classes of trained runs are the species of their data: birds,
unless named here.
"""
from __future__ import annotations

BIRD, ANIMAL, SOUND = "bird", "other animal", "sound"

SOUNDS = frozenset({
    'Dog', 'Engine', 'Environmental', 'Fireworks', 'Gun', 'Human non-vocal', 'Human vocal', 'Human whistle',
    'Noise', 'Power tools', 'Siren',
})

ANIMALS = frozenset({
    'Acris crepitans', 'Acris gryllus', 'Allonemobius allardi', 'Allonemobius tinnulus', 'Allonemobius walkeri',
    'Alouatta pigra', 'Amblycorypha alexanderi', 'Amblycorypha longinicta', 'Amblycorypha oblongifolia',
    'Amblycorypha rotundifolia', 'Anaxipha exigua', 'Anaxyrus americanus', 'Anaxyrus canorus',
    'Anaxyrus cognatus', 'Anaxyrus fowleri', 'Anaxyrus houstonensis', 'Anaxyrus microscaphus',
    'Anaxyrus quercicus', 'Anaxyrus speciosus', 'Anaxyrus terrestris', 'Anaxyrus woodhousii', 'Apis mellifera',
    'Atlanticus testaceus', 'Canis latrans', 'Canis lupus', 'Conocephalus brevipennis',
    'Conocephalus fasciatus', 'Cyrtoxipha columbiana', 'Dryophytes andersonii', 'Dryophytes arenicolor',
    'Dryophytes avivoca', 'Dryophytes chrysoscelis', 'Dryophytes cinereus', 'Dryophytes femoralis',
    'Dryophytes gratiosus', 'Dryophytes squirellus', 'Dryophytes versicolor', 'Eleutherodactylus planirostris',
    'Eunemobius carolinus', 'Eunemobius confusus', 'Gastrophryne carolinensis', 'Gastrophryne olivacea',
    'Gryllus assimilis', 'Gryllus fultoni', 'Gryllus pennsylvanicus', 'Gryllus rubens', 'Hyliola regilla',
    'Incilius valliceps', 'Lithobates catesbeianus', 'Lithobates clamitans', 'Lithobates palustris',
    'Lithobates sylvaticus', 'Microcentrum rhombifolium', 'Miogryllus saussurei', 'Neoconocephalus bivocatus',
    'Neoconocephalus ensiger', 'Neoconocephalus retusus', 'Neoconocephalus robustus', 'Neonemobius cubensis',
    'Odocoileus virginianus', 'Oecanthus celerinictus', 'Oecanthus exclamationis', 'Oecanthus fultoni',
    'Oecanthus nigricornis', 'Oecanthus niveus', 'Oecanthus pini', 'Oecanthus quadripunctatus',
    'Orchelimum agile', 'Orchelimum concinnum', 'Orchelimum pulchellum', 'Orocharis saltator',
    'Phyllopalpus pulchellus', 'Pseudacris brimleyi', 'Pseudacris clarkii', 'Pseudacris crucifer',
    'Pseudacris feriarum', 'Pseudacris nigrita', 'Pseudacris ocularis', 'Pseudacris ornata',
    'Pseudacris streckeri', 'Pseudacris triseriata', 'Pterophylla camellifolia', 'Scaphiopus couchii',
    'Sciurus carolinensis', 'Scudderia curvicauda', 'Scudderia furcata', 'Scudderia texensis',
    'Spea bombifrons', 'Tamias striatus', 'Tamiasciurus hudsonicus',
})


def group_of(name: str) -> str:
    """``"bird"``, ``"other animal"`` or ``"sound"`` for a class named by its scientific name (BirdNET's
    ``ebird_code`` and ``sci_name``) or its ``Scientific_Common`` label."""
    key = str(name).split("_", 1)[0].strip()
    if key in SOUNDS:
        return SOUND
    return ANIMAL if key in ANIMALS else BIRD


def is_bird(name: str) -> bool:
    """Whether ``group_of(name)`` is a bird."""
    return group_of(name) == BIRD
