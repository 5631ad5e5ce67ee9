"""The concept registry: the built-in cai2025 file, lookup, and validation errors with file:line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from clipaudit.errors import RegistryError, SettingsError
from clipaudit.registry import list_registries, load_registry, parse_registry

from .conftest import shared_path

GOOD = """\
registry: mini
version: "2"
groups:
  - name: Animal
    category: common
  - name: Color
    category: common
    templates: ["a {} object."]
concepts:
  - name: dog
    group: Animal
    gloss: a dog
    synonyms: [dog, puppy]
    negative_contexts: [hot dog]
  - name: cat
    group: Animal
    gloss: a cat
    synonyms: [cat]
  - name: red
    group: Color
    gloss: the colour red
    synonyms: [red]
    version: 3
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "reg.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_builtin_registry_has_the_papers_146_concepts_in_15_groups(registry):
    assert "cai2025" in list_registries()
    assert len(registry.concepts) == 146
    assert len(registry.groups) == 15
    assert set(registry.categories) == {"common", "under-captioned", "nuisance", "sensitive"}
    assert {g.name for g in registry.groups if g.sensitive} == {"Trait", "Stereotype"}
    for concept in registry.concepts:
        assert concept.synonyms, concept.name
        assert concept.prompts, concept.name


def test_builtin_registry_matches_the_shared_reference(registry):
    reference = yaml.safe_load(shared_path("reference/concepts_cai2025.yaml").read_text())
    assert [r["concept"] for r in reference] == [c.name for c in registry.concepts]
    for ref, concept in zip(reference, registry.concepts, strict=True):
        assert concept.group == ref["group"]
        assert registry.group(concept.group).category == ref["category"]
        assert registry.group(concept.group).label == ref["paper_group_label"]
        assert list(concept.paper_synonyms) == list(ref["paper_synonyms"]), concept.name
        assert concept.gloss == ref["gloss"]


def test_lookup_is_case_and_separator_insensitive_with_suggestions(registry):
    assert registry.concept("Ice-Cream").name == "ice cream"
    assert registry.group("POV").name == "Viewpoint"  # by paper label
    assert [c.name for c in registry.concepts_in("Weather")][:2] == ["sandstorm", "drought"]
    with pytest.raises(RegistryError, match="did you mean 'giraffe'"):
        registry.concept("girafe")
    with pytest.raises(RegistryError, match=r"no group 'Animals'.*did you mean 'Animal'"):
        registry.group("Animals")


def test_select_keeps_only_the_named_groups(registry):
    sub = registry.select(["Color", "emotion"])
    assert [g.name for g in sub.groups] == ["Color", "Emotion"]
    assert len(sub.concepts) == 20
    assert {c.group for c in sub.concepts} == {"Color", "Emotion"}


def test_a_good_user_file_loads_with_defaults_and_provenance(tmp_path):
    reg = load_registry(write(tmp_path, GOOD))
    assert reg.name == "mini" and reg.version == "2"
    dog = reg.concept("dog")
    assert dog.prompts == ("dog",)  # defaults to the name
    assert dog.negative_contexts == ("hot dog",)
    assert dog.line == 10
    assert reg.group("Color").templates == ("a {} object.",)
    prov = reg.provenance()
    assert prov["concept_versions"] == {"dog": 1, "cat": 1, "red": 3}
    assert len(prov["sha256"]) == 64


@pytest.mark.parametrize(
    ("old", "new", "line", "message"),
    [
        (
            "    synonyms: [cat]\n",
            "    synonyms: [cat]\n    synonym: [kitty]\n",
            19,
            r"unknown key 'synonym' in concept 'cat' \(did you mean 'synonyms'",
        ),
        (
            "  - name: cat\n",
            "  - name: Dog\n",
            15,
            r"duplicate concept 'Dog' \(first defined at line 10\)",
        ),
        (
            "    synonyms: [cat]\n",
            "    synonyms: [cat, puppy]\n",
            18,
            r"synonym 'puppy' of concept 'cat' is also a synonym of 'dog'",
        ),
        ("    synonyms: [cat]\n", "    synonyms: []\n", 18, r"'synonyms' is an empty list"),
        (
            "    group: Color\n",
            "    group: Colour\n",
            20,
            r"unknown group 'Colour' \(did you mean 'Color'\?\)",
        ),
        (
            "  - name: red\n    group: Color\n    gloss: the colour red\n    synonyms: [red]\n    version: 3\n",
            "",
            6,
            r"group 'Color' has no concepts",
        ),
        ("    gloss: a cat\n", "", 15, r"concept 'cat' is missing required key\(s\) gloss"),
        (
            "    version: 3\n",
            "    version: three\n",
            23,
            r"'version' must be a positive integer, got 'three'",
        ),
        (
            "    gloss: a cat\n",
            "    gloss: a cat\n    gloss: a kitten\n",
            18,
            r"duplicate key 'gloss' \(first at line 17\)",
        ),
        (
            '    templates: ["a {} object."]\n',
            '    templates: ["an object."]\n',
            8,
            r"must contain '\{\}' exactly once",
        ),
        (
            '    templates: ["a {} object."]\n',
            '    templates: ["a {} object in {style}."]\n',
            8,
            r"must contain '\{\}' exactly once",
        ),
        (
            "    synonyms: [dog, puppy]\n",
            "    synonyms: [dog, Puppy, puppy]\n",
            13,
            r"lists 'puppy' twice",
        ),
        (
            "concepts:\n",
            "concept:\n",
            9,
            r"unknown key 'concept' in the registry file \(did you mean 'concepts'",
        ),
        ("    synonyms: [dog, puppy]\n", "    synonyms: [dog, puppy\n", 14, r"invalid YAML"),
        (
            "    category: common\n",
            "    category: common\n    modifier_of: bed\n",
            6,
            r"group 'Animal': 'modifier_of' must be a list of non-empty strings, got 'bed'",
        ),
        (
            "    negative_contexts: [hot dog]\n",
            "    negative_contexts: [hot dog]\n    modifer_of: [bed]\n",
            15,
            r"unknown key 'modifer_of' in concept 'dog' \(did you mean 'modifier_of'",
        ),
        (
            "    negative_contexts: [hot dog]\n",
            "    negative_contexts: [hot dog]\n    not_after: [by, By]\n",
            15,
            r"concept 'dog': 'not_after' lists 'By' twice",
        ),
        (
            "    negative_contexts: [hot dog]\n",
            "    negative_contexts: [hot dog]\n    together: [[vs]]\n",
            15,
            r"'together' must be a list of 2 to 8 lists of non-empty strings, got \[\['vs'\]\]",
        ),
        (
            "    negative_contexts: [hot dog]\n",
            "    negative_contexts: [hot dog]\n    together: [[vs], []]\n",
            15,
            r"'together' must be a list of 2 to 8 lists",
        ),
        (
            "    negative_contexts: [hot dog]\n",
            "    negative_contexts: [hot dog]\n    makes: ferrari\n",
            15,
            r"concept 'dog': 'makes' must be a list of non-empty strings, got 'ferrari'",
        ),
        (  # a negative context that is a synonym, once normalised: "puppy" could never match
            "    negative_contexts: [hot dog]\n",
            "    negative_contexts: [hot dog, Puppy!]\n",
            14,
            r"concept 'dog': negative context 'Puppy!' is also one of its synonyms \('puppy'\)",
        ),
    ],
)
def test_malformed_files_fail_with_file_line_and_the_problem(tmp_path, old, new, line, message):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(RegistryError, match=message) as info:
        load_registry(path)
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_modifier_heads_and_cues_load_per_group_and_per_concept(tmp_path):
    text = GOOD.replace(
        "    category: common\n", "    category: common\n    modifier_of: [bed, collar]\n", 1
    ).replace(
        "    negative_contexts: [hot dog]\n",
        "    negative_contexts: [hot dog]\n    modifier_of: [kennel]\n    not_after: [by]\n",
    )
    reg = load_registry(write(tmp_path, text))
    assert reg.group("Animal").modifier_of == ("bed", "collar")
    assert reg.group("Color").modifier_of == () and reg.group("Color").not_after == ()
    dog = reg.concept("dog")
    assert (dog.modifier_of, dog.not_after) == (("kennel",), ("by",))
    assert reg.concept("cat").modifier_of == ()


def test_colourways_makes_and_word_lists_load(tmp_path):
    text = GOOD.replace(
        "    synonyms: [red]\n",
        "    synonyms: [red]\n    colourways: [Cherry]\n    makes: [ferrari]\n"
        "    together: [[vs, versus], [rugby]]\n",
    )
    red = load_registry(write(tmp_path, text)).concept("red")
    assert red.colourways == ("Cherry",) and red.makes == ("ferrari",)
    assert red.together == (("vs", "versus"), ("rugby",))
    assert load_registry(write(tmp_path, GOOD)).concept("red").together == ()


def test_a_concept_repeating_its_groups_head_names_both_lines(tmp_path):
    text = GOOD.replace(
        "    category: common\n", "    category: common\n    modifier_of: [bed, collar]\n", 1
    ).replace(
        "    negative_contexts: [hot dog]\n",
        "    negative_contexts: [hot dog]\n    modifier_of: [Bed]\n",
    )
    path = write(tmp_path, text)
    with pytest.raises(
        RegistryError, match=r"'Bed' in its 'modifier_of' is already in group"
    ) as info:
        load_registry(path)
    assert info.value.line == 16  # the concept's key; the group's line is in the message
    assert "(line 4)" in str(info.value)


def test_non_mapping_and_empty_files_are_rejected(tmp_path):
    with pytest.raises(RegistryError, match="file is empty"):
        parse_registry("")
    with pytest.raises(RegistryError, match="must be a mapping"):
        parse_registry("- just\n- a list\n")
    with pytest.raises(RegistryError, match="'groups' must be a non-empty list"):
        parse_registry("groups: []\nconcepts: []\n")


def test_yaml_tags_that_build_python_objects_are_refused(tmp_path):
    evil = GOOD.replace('version: "2"', "version: !!python/object/apply:os.system ['echo pwned']")
    with pytest.raises(RegistryError, match="invalid YAML"):
        parse_registry(evil)


def test_unknown_builtin_and_missing_files_have_clear_errors(tmp_path):
    with pytest.raises(
        RegistryError, match=r"no built-in registry 'cai2024'.*did you mean 'cai2025'"
    ):
        load_registry("cai2024")
    with pytest.raises(RegistryError, match="does not exist"):
        load_registry(tmp_path / "nope.yaml")
    with pytest.raises(RegistryError, match="is a folder; expected a YAML file"):
        load_registry(tmp_path)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        # a list as a key
        ("    gloss: a cat\n", "    gloss: a cat\n    ? [a, b]\n    : x\n",
         r"keys must be plain names, got a list as a key"),
        # a synonym that normalises to nothing could never match
        ("synonyms: [cat]", "synonyms: ['!!!']", r"'!!!', which has no letter or digit"),
        ("synonyms: [cat]", "synonyms: [cat, '🐶']", r"which has no letter or digit"),
        ('registry: mini', 'registry: ""', r"'registry' must be a non-empty string"),
        ('version: "2"', "version: 1.10", r"'version' 1.1 is a number, .*quote it"),
        ("    category: common\n  - name: Color", "    category: common\n    description: 5\n  - name: Color",
         r"'description' must be a string, got 5"),
    ],
)  # fmt: skip
def test_keys_synonyms_and_names_that_cannot_work_are_refused(tmp_path, old, new, message):
    assert old in GOOD
    with pytest.raises(RegistryError, match=message):
        load_registry(write(tmp_path, GOOD.replace(old, new, 1)))


def test_a_huge_or_deep_bad_value_gives_a_short_message(tmp_path):
    nested = "&a0 [" + ", ".join(["dog"] * 10) + "]"
    for level in range(1, 9):  # an alias bomb: 10^9 strings once expanded, 1 kB as written
        nested = f"&a{level} [{nested}, " + ", ".join([f"*a{level - 1}"] * 9) + "]"
    bomb = GOOD.replace("synonyms: [cat]", f"synonyms: {nested}")
    deep = GOOD.replace("synonyms: [cat]", "synonyms: " + "[" * 3000 + "]" * 3000)
    for text in (deep, GOOD.replace("synonyms: [cat]", "synonyms: [[[[[[cat]]]]]]")):
        with pytest.raises(RegistryError) as info:
            load_registry(write(tmp_path, text))
        assert len(str(info.value)) < 400
    with pytest.raises(RegistryError) as info:
        load_registry(write(tmp_path, bomb))
    assert len(str(info.value)) < 400


def test_an_entry_that_is_no_mapping_is_reported_at_its_own_line(tmp_path):
    text = GOOD + "  - bird\n"
    line = text.count("\n")  # the last line
    with pytest.raises(RegistryError, match=rf"reg\.yaml:{line}: a concept must be a mapping"):
        load_registry(write(tmp_path, text))
    # what it is instead, in words: never the loader's own class (_LineList)
    with pytest.raises(RegistryError) as info:
        load_registry(write(tmp_path, GOOD + "  - [bird, fish]\n"))
    assert str(info.value).endswith("a concept must be a mapping of keys to values, got a list "
                                    "['bird', 'fish']")  # fmt: skip
    with pytest.raises(RegistryError) as info:
        load_registry(write(tmp_path, GOOD + "  -\n"))
    assert str(info.value).endswith("must be a mapping of keys to values, got null")


@pytest.mark.parametrize("given", [None, 3, ["cai2025"]])
def test_a_registry_of_another_type_is_a_settings_error_naming_the_three_forms(given):
    with pytest.raises(SettingsError) as info:
        load_registry(given)
    assert str(info.value).startswith(
        "a registry is a built-in name (clipaudit concepts list), the path of a YAML file or a "
        f"Registry (clipaudit.load_registry), got {type(given).__name__}"
    )


def test_a_lookup_by_a_name_of_another_type_is_a_settings_error(registry):
    with pytest.raises(SettingsError, match="a concept name must be a string, got int 3"):
        registry.concept(3)
    with pytest.raises(SettingsError, match="a group name must be a string, got NoneType None"):
        registry.group(None)


@pytest.mark.parametrize(
    ("anchor", "merge", "got"),
    [
        ("    synonyms: [cat]\n", "    <<: *dog\n", "a mapping (written at line 10)"),
        ("    synonyms: [cat]\n", "    <<: [*dog]\n", "a list (written at line 26)"),
        ("    synonyms: &words [cat]\n", "    <<: *words\n", "a list (written at line 19)"),
        ("    gloss: &gloss a cat\n", "    <<: *gloss\n", "a value (written at line 18)"),
    ],
)
def test_a_yaml_merge_key_is_refused_with_its_line_and_the_fix(tmp_path, anchor, merge, got):
    """A merge key (``<<: *anchor``), of a mapping or of what cannot be merged, is refused at its
    own line, saying what was expected and what to write instead; a plain alias still loads."""
    text = GOOD.replace("  - name: dog\n", "  - &dog\n    name: dog\n").replace(
        anchor.replace("&words ", "").replace("&gloss ", ""), anchor
    )
    text += f"  - name: kitten\n{merge}    group: Animal\n    gloss: g\n    synonyms: [kitten]\n"
    path = write(tmp_path, text)
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    line = text.splitlines().index(merge.rstrip("\n")) + 1
    assert str(info.value) == (
        f"{path}:{line}: a YAML merge key ('<<') is not supported in a registry; expected each "
        f"key of the entry written out, got '<<' merging {got}; write the keys out in full (an "
        "alias may still repeat one value: 'synonyms: *words')"
    )
    aliased = GOOD.replace("synonyms: [cat]", "synonyms: &words [cat]") + (
        "  - name: kitten\n    group: Animal\n    gloss: g\n    synonyms: [kitten]\n"
        "    negative_contexts: *words\n"
    )
    assert load_registry(write(tmp_path, aliased)).concept("kitten").negative_contexts == ("cat",)
