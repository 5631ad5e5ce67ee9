"""The concept registry: the built-in cai2025 file, lookup, and validation errors with file:line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import yaml

from clipaudit import registry as registry_module
from clipaudit.errors import RegistryError, SettingsError, did_you_mean
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


@pytest.mark.parametrize(
    ("asked", "hint"),
    [
        # a word captions use: the concept that lists it, said to be so
        ("cop", "did you mean 'police officer'? 'cop' is a synonym of it"),
        ("T-shirt", "did you mean 'shirt'? 'T-shirt' is a synonym of it"),
        # the start of a word of a name: spelling alone gave nothing, or "office" first
        ("polic", "did you mean 'police officer'?"),
        ("police", "did you mean 'police officer' or 'office'?"),
    ],
)
def test_a_concept_not_found_is_suggested_by_its_synonyms_and_the_words_of_its_name(
    registry, asked, hint
):
    with pytest.raises(RegistryError) as info:
        registry.concept(asked)
    assert str(info.value) == f"no concept {asked!r} in registry 'cai2025' ({hint})"


def test_a_concept_suggested_for_a_synonym_lists_every_concept_that_claims_it(tmp_path):
    """A word may be a synonym in two groups (orange the colour and the fruit)."""
    text = GOOD.replace("    synonyms: [red]\n", "    synonyms: [red, ruby]\n")
    text = text.replace("    synonyms: [cat]\n", "    synonyms: [cat, ruby]\n")
    with pytest.raises(RegistryError) as info:
        load_registry(write(tmp_path, text)).concept("Ruby")
    assert str(info.value) == (
        "no concept 'Ruby' in registry 'mini' (did you mean 'cat' or 'red'? 'Ruby' is a synonym "
        "of each)"
    )


def test_select_keeps_only_the_named_groups(registry):
    sub = registry.select(["Color", "emotion"])
    assert [g.name for g in sub.groups] == ["Color", "Emotion"]
    assert len(sub.concepts) == 20
    assert {c.group for c in sub.concepts} == {"Color", "Emotion"}
    # one name is one group: it was taken letter by letter ("no group 'C'")
    one = registry.select("color")
    assert [g.name for g in one.groups] == ["Color"]
    assert {c.group for c in one.concepts} == {"Color"}
    assert one.concepts == registry.concepts_in("Color")


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
            r"duplicate concept 'Dog' \(first defined at line 10 as 'dog'; names are compared "
            r"ignoring case, accents, punctuation and spaces\)",
        ),
        (  # an image folder "do_g" or "DoG" would be either: folders are matched without spaces
            "  - name: cat\n",
            "  - name: do g\n",
            15,
            r"duplicate concept 'do g' \(first defined at line 10 as 'dog'",
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


def test_a_folder_named_like_a_builtin_registry_does_not_hide_it(tmp_path, monkeypatch):
    """A run folder named cai2025 in the working folder (``--out cai2025``) made every command
    that uses the default registry fail: "registry 'cai2025' is a folder"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cai2025").mkdir()
    (tmp_path / "miniworld").mkdir()
    assert len(load_registry().concepts) == 146
    assert load_registry("miniworld").name == "miniworld"
    assert load_registry("cai2025").path == registry_module.resolve_registry_path("cai2025")
    assert load_registry("cai2025").path.parent.name in ("concepts", "_concepts")
    # a folder that names no built-in registry is still refused as a registry
    (tmp_path / "mine").mkdir()
    with pytest.raises(RegistryError, match="registry 'mine' is a folder; expected a YAML file"):
        load_registry("mine")


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


def test_deep_nesting_is_refused_at_its_line_not_a_crash(tmp_path):
    """Composing nested YAML recurses once per level: in Python (a RecursionError for some 500
    nested mappings) and in libyaml's C (the interpreter dies at some 30,000 nested lists)."""
    mappings = GOOD.replace("gloss: a cat", "gloss: " + "{a: " * 2000 + "1" + "}" * 2000)
    with pytest.raises(RegistryError) as info:
        load_registry(write(tmp_path, mappings))
    assert info.value.line == 17
    assert str(info.value).endswith(
        "lists and mappings nested more than 16 deep; expected at most 5 (a concept's "
        "'together' lists in the 'concepts' list)"
    )
    lists = write(
        tmp_path, GOOD.replace("synonyms: [cat]", "synonyms: " + "[" * 50_000 + "]" * 50_000)
    )
    code = "import sys; from clipaudit.registry import load_registry; load_registry(sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", code, str(lists)], capture_output=True, text=True)
    assert done.returncode == 1, done  # an uncaught RegistryError, not a signal
    assert f"RegistryError: {lists}:18: lists and mappings nested more than 16 deep" in done.stderr
    # indented nesting, which no bracket shows: Python's recursion limit, said the same way
    indented = "".join("  " * (level + 1) + "a:\n" for level in range(3000))
    with pytest.raises(RegistryError, match=r"nested more than 16 deep"):
        load_registry(write(tmp_path, "groups:\n" + indented + "  " * 3001 + "1\n"))
    # the deepest a registry needs still loads
    five = GOOD.replace(
        "    synonyms: [red]\n", "    synonyms: [red]\n    together: [[vs], [rugby]]\n"
    )
    assert load_registry(write(tmp_path, five)).concept("red").together == (("vs",), ("rugby",))


@pytest.mark.parametrize("character", ["\x07", "\x00", "\x1b"])
def test_a_character_yaml_refuses_is_one_error_with_its_line(tmp_path, character, capsys):
    from clipaudit.cli import main

    path = write(tmp_path, GOOD.replace("gloss: a cat", f"gloss: a {character}cat"))
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    assert str(info.value) == (
        f"{path}:17: invalid YAML: expected printable text, got the character {character!r} "
        f"(U+{ord(character):04X}; control characters are not allowed); remove it"
    )
    with pytest.raises(SystemExit) as exited:
        main(["concepts", "validate", str(path)])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {info.value}"]


@pytest.mark.parametrize(
    ("together", "message"),
    [
        # "football" alone would satisfy both lists: every football caption would count
        ("[[vs, football], [Football, nfl]]", "'together' lists 'Football' twice (as 'football' too)"),
        ("[[vs], ['!!!', nfl]]", "'together' lists '!!!', which has no letter or digit once normalised"),
    ],
)  # fmt: skip
def test_together_words_that_cannot_work_are_refused(tmp_path, together, message):
    text = GOOD.replace("    synonyms: [red]\n", f"    synonyms: [red]\n    together: {together}\n")
    with pytest.raises(RegistryError, match=re.escape(f"concept 'red': {message}")) as info:
        load_registry(write(tmp_path, text))
    assert info.value.line == 23


@pytest.mark.parametrize(
    ("prompts", "line", "message"),
    [
        ("    prompts: [kitty, Dog]\n", 19, r"prompt 'Dog' of concept 'cat' is also a prompt of 'dog' "
         r"\(line 10\) in group 'Animal'; .* each prompt must point to one concept$"),
        ("    prompts: [dog]\n", 19, r"prompt 'dog' of concept 'cat' is also a prompt of 'dog'"),
    ],
)  # fmt: skip
def test_a_prompt_of_two_concepts_of_a_group_is_refused(tmp_path, prompts, line, message):
    """Two concepts prompted alike get one text embedding: the classifier cannot tell them apart."""
    text = GOOD.replace("    synonyms: [cat]\n", "    synonyms: [cat]\n" + prompts)
    with pytest.raises(RegistryError, match=message) as info:
        load_registry(write(tmp_path, text))
    assert info.value.line == line
    # a prompt shared across groups is no clash: each group is classified on its own
    other = GOOD.replace("    synonyms: [red]\n", "    synonyms: [red]\n    prompts: [dog]\n")
    assert load_registry(write(tmp_path, other)).concept("red").prompts == ("dog",)


def test_prompts_in_any_script_load_and_clash_as_a_tokenizer_reads_them(tmp_path):
    """A multilingual model is asked in its languages: prompts are sent as written, so a prompt
    of another script loads (it was refused as having no Latin letter), and two prompts a
    tokenizer reads alike (case, white space) still clash."""
    text = GOOD.replace("    synonyms: [cat]\n", "    synonyms: [cat]\n    prompts: [猫, кошка]\n")
    assert load_registry(write(tmp_path, text)).concept("cat").prompts == ("猫", "кошка")
    clash = GOOD.replace("    synonyms: [cat]\n", "    synonyms: [cat]\n    prompts: ['a  DOG']\n")
    clash = clash.replace("    synonyms: [dog", "    prompts: [a dog]\n    synonyms: [dog", 1)
    with pytest.raises(RegistryError, match=r"prompt 'a  DOG' of concept 'cat' is also a prompt"):
        load_registry(write(tmp_path, clash))


COLOR = "    category: common\n    templates"  # the Color group's category (line 7)


@pytest.mark.parametrize(
    ("edits", "line", "message"),
    [
        ([(COLOR, "    category: Common\n    templates")], 7,
         r"group 'Color': category 'Common' is written 'common' in group 'Animal' \(line 4\); "
         "write a category the same way everywhere"),
        ([(COLOR, "    category: common\n    label: animal\n    templates")], 8,
         r"group 'Color': label 'animal' is also the name of group 'Animal' \(line 4\)"),
        ([("name: Animal\n    category: common\n", "name: Animal\n    category: common\n    label: Colour\n"),
          (COLOR, "    category: common\n    label: colour\n    templates")], 9,
         r"group 'Color': label 'colour' is also the label of group 'Animal' \(line 4\)"),
        ([("name: Animal\n    category: common\n", "name: Animal\n    category: common\n    label: Color\n")],
         7, r"group 'Color': name 'Color' is also the label of group 'Animal' \(line 4\)"),
    ],
)  # fmt: skip
def test_groups_whose_category_or_label_clash_are_refused(tmp_path, edits, line, message):
    """Categories differing only in case would be counted apart; a label naming another group
    would make a lookup by it find one of the two."""
    text = GOOD
    for old, new in edits:
        assert old in text
        text = text.replace(old, new, 1)
    with pytest.raises(RegistryError, match=message) as info:
        load_registry(write(tmp_path, text))
    assert info.value.line == line


def test_a_file_that_is_no_regular_file_is_named_as_such(tmp_path):
    with pytest.raises(RegistryError) as info:
        load_registry("/dev/null")  # it exists: "does not exist" would send the user astray
    assert str(info.value) == (
        "registry '/dev/null' is not a regular file (a device, pipe or socket); expected a YAML file"
    )


def test_a_huge_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = write(tmp_path, GOOD)
    monkeypatch.setattr(registry_module, "MAX_REGISTRY_BYTES", 2 << 20)
    path.write_bytes(GOOD.encode() + b"#" * (3 << 20) + b"\n")
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("read in full"))
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    assert str(info.value) == (
        f"{path}: the file is 3.0 MiB; expected a registry of at most 2 MiB (the paper's 146 "
        "concepts take 80 kB)"
    )


def test_a_file_that_cannot_be_read_is_one_error(tmp_path, monkeypatch):
    path = write(tmp_path, GOOD)

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    assert str(info.value) == (
        f"{path}: cannot be read: PermissionError: [Errno 13] Permission denied: '{path}'"
    )


@pytest.mark.parametrize(
    ("old", "new", "got"),
    [
        ("synonyms: [cat]", "synonyms: [cat, on, off]", "'synonyms' must be a list of non-empty strings, got ['cat', True, False]"),
        ("name: cat", "name: yes", "'name' must be a non-empty string, got True"),
        ("gloss: a cat", "gloss: 1984", "'gloss' must be a non-empty string, got 1984"),
        ('version: "2"', "version: 2024-01-01", "'version' must be a non-empty string, got datetime.date(2024, 1, 1)"),
    ],
)  # fmt: skip
def test_text_yaml_reads_as_another_type_gets_the_quoting_hint(tmp_path, old, new, got):
    """A synonym list [on, off] reads as [True, False]: the message says why and what to do."""
    with pytest.raises(RegistryError) as info:
        load_registry(write(tmp_path, GOOD.replace(old, new, 1)))
    assert str(info.value).endswith(
        f"{got}; YAML reads unquoted yes, no, on, off, numbers and dates as such, not as text: "
        "quote it"
    )
    # a wrong shape is no quoting matter
    with pytest.raises(RegistryError) as info:
        load_registry(write(tmp_path, GOOD.replace("synonyms: [cat]", "synonyms: 5")))
    assert str(info.value).endswith("'synonyms' must be a list of non-empty strings, got 5")


def test_show_prints_the_sense_rules_and_templates_a_concept_is_matched_and_asked_with(
    tmp_path, capsys
):
    from clipaudit.cli import main

    text = GOOD.replace(
        "    category: common\n", "    category: common\n    modifier_of: [bed]\n", 1
    ).replace(
        "    negative_contexts: [hot dog]\n",
        "    negative_contexts: [hot dog]\n    modifier_of: [kennel]\n    not_after: [by]\n"
        "    makes: [lassie]\n    together: [[vs], [agility]]\n",
    )
    text = text.replace("    synonyms: [red]\n", "    synonyms: [red]\n    colourways: [cherry]\n")
    path = write(tmp_path, text)
    main(["concepts", "show", "dog", "--registry", str(path)])
    rows = {
        cells[0]: cells[1]
        for line in capsys.readouterr().out.splitlines()
        if len(cells := [cell.strip() for cell in line.strip("│ ").split("│")]) == 2
    }
    assert rows["modifier of (group)"] == "bed" and rows["modifier of"] == "kennel"
    assert rows["not after"] == "by" and rows["makes"] == "lassie"
    assert rows["together"] == "[vs] + [agility]"
    assert "not after (group)" not in rows and "templates (group)" not in rows
    main(["concepts", "show", "red", "--registry", str(path)])
    shown = capsys.readouterr().out
    assert "colourways" in shown and "cherry" in shown
    assert "templates (group)" in shown and "a {} object." in shown


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("  - name: cat\n", "\t- name: cat\n"),  # YAML says "cannot start any token"
        ("    gloss: a cat\n", "\tgloss: a cat\n"),
        ("    synonyms: [cat]\n", "    synonyms:\n\t- cat\n"),
    ],
)
def test_a_line_indented_with_a_tab_is_named_as_such(tmp_path, old, new):
    text = GOOD.replace(old, new, 1)
    line = text.splitlines().index(next(ln for ln in new.splitlines() if "\t" in ln)) + 1
    with pytest.raises(RegistryError, match="indented with a tab") as info:
        load_registry(write(tmp_path, text))
    assert info.value.line == line
    assert str(info.value).count("invalid YAML") == 1


def test_a_utf16_file_is_named_as_such(tmp_path):
    path = tmp_path / "reg.yaml"
    path.write_text(textwrap.dedent(GOOD), encoding="utf-16")  # what Notepad's "Unicode" saves
    with pytest.raises(RegistryError, match=r"not UTF-8 text but UTF-16 .*; save it as UTF-8"):
        load_registry(path)


def test_a_registry_changed_in_code_is_no_longer_identified_by_its_file(tmp_path):
    import dataclasses

    from clipaudit import count_coverage
    from clipaudit.errors import RunFolderError

    path = write(tmp_path, GOOD)
    reg = load_registry(path)
    file_sha = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    assert reg.sha256 == file_sha
    # a selection, or another description, still holds what the file says
    assert reg.select(["Color"]).sha256 == file_sha
    assert dataclasses.replace(reg, description="mine").sha256 == file_sha
    cat = reg.concept("cat")
    kitty = dataclasses.replace(cat, synonyms=("cat", "kitty"))
    edited = dataclasses.replace(
        reg, concepts=tuple(kitty if c is cat else c for c in reg.concepts)
    )
    assert edited.sha256 != file_sha
    assert edited.select(["Animal"]).sha256 != file_sha
    # two registries built without a file are told apart by what they hold
    bare = {field: getattr(reg, field) for field in ("name", "version", "description", "groups")}
    assert registry_module.Registry(**bare, concepts=reg.concepts).sha256 not in {
        None,
        registry_module.Registry(**bare, concepts=edited.concepts).sha256,
    }
    # so a run counted with the file's concepts is not resumed with the edited ones
    captions = ["a kitty on a mat", "a cat"]
    first = count_coverage(captions, registry=reg, out=tmp_path / "run")
    assert first.concepts.set_index("concept")["count"]["cat"] == 1
    with pytest.raises(RunFolderError, match=r"registry\.sha256"):
        count_coverage(captions, registry=edited, out=tmp_path / "run")


@pytest.mark.parametrize(
    ("old", "new", "line", "message"),
    [  # "寿司" and "ラーメン" both normalise to "": lookups and image folders found either for both
        ("  - name: cat\n", "  - name: 寿司\n", 15, r"a concept: 'name' '寿司' has no letter or digit"),
        ("  - name: cat\n", "  - name: '???'\n", 15, r"'name' '\?\?\?' has no letter or digit"),
        ("    category: common\n", "    category: common\n    label: '★'\n", 6,
         r"group 'Animal': 'label' '★' has no letter or digit"),
        ("    category: common\n", "    category: 'ümlaut'\n  # c\n", 5, None),  # Latin: works
    ],
)  # fmt: skip
def test_a_name_of_no_letter_or_digit_once_normalised_is_refused(tmp_path, old, new, line, message):
    path = write(tmp_path, GOOD.replace(old, new, 1))
    if message is None:
        assert load_registry(path).group("Animal").category == "ümlaut"
        return
    with pytest.raises(RegistryError, match=message) as info:
        load_registry(path)
    assert info.value.line == line


SOFT_HYPHEN = "\u00ad"


@pytest.mark.parametrize(
    ("key", "item", "character", "reads_as", "fix"),
    [
        # a Cyrillic komi de, which looks like d: the matcher would count "og", never "dog"
        ("synonyms", "\u0501og", "\u0501", "og", "write it in Latin letters"),
        # a Greek omicron in a phrase: "h t dog", which no caption of a hot dog says
        ("negative_contexts", "h\u03bft dog", "\u03bf", "h t dog", "write it in Latin letters"),
        # a zero-width space pasted from a web page: "pup py" is two words
        ("synonyms", "pup\u200bpy", "\u200b", "pup py", "remove the invisible character"),
        ("modifier_of", "b\u0435d", "\u0435", "b d", "write it in Latin letters"),
        # a soft hyphen is dropped, not a break: "puppy" is matched, though not what is shown
        ("synonyms", "pup\u00adpy", "\u00ad", "puppy", "remove the invisible character"),
    ],
)
def test_a_word_holding_a_character_the_matcher_cannot_see_is_refused(
    tmp_path, key, item, character, reads_as, fix
):
    lists = {"synonyms": ["dog"]}
    lists.setdefault(key, []).append(item)  # a synonym after "dog" (line 13), else on line 14
    written = "".join(f"    {name}: {json.dumps(words)}\n" for name, words in lists.items())
    text = GOOD.replace("    synonyms: [dog, puppy]\n    negative_contexts: [hot dog]\n", written)
    with pytest.raises(RegistryError) as refused:
        load_registry(write(tmp_path, text))
    reads = "nothing" if character == SOFT_HYPHEN else "a word break"
    assert str(refused.value) == (
        f"{tmp_path / 'reg.yaml'}:{13 if key == 'synonyms' else 14}: concept 'dog': {key!r} lists "
        f"{item!r}, whose {unicodedata.name(character).lower()} (U+{ord(character):04X}) the "
        f"matcher reads as {reads}, so it would "
        f"match {reads_as!r}; {fix}"
    )


def test_latin_letters_folding_drops_and_accents_still_load(tmp_path):
    """Only other scripts and invisible characters are refused: accented Latin letters fold to
    their base letters, and ß or ø normalise alike in captions and registry."""
    text = GOOD.replace("[dog, puppy]", "[dog, puppy, chien\u00e9, stra\u00dfenhund, h\u00f8nd]")
    concept = load_registry(write(tmp_path, text)).concept("dog")
    assert concept.synonyms == ("dog", "puppy", "chien\u00e9", "stra\u00dfenhund", "h\u00f8nd")


@pytest.mark.parametrize(
    ("replaced", "by", "line", "message"),
    [
        # YAML refuses a raw escape character, but its "\e" escape writes one
        (
            "    category: common\n  - name: Color",
            '    category: common\n    description: "\\e]0;owned\\a"\n  - name: Color',
            6,
            "group 'Animal': 'description' '\\x1b]0;owned\\x07' holds the control character "
            "'\\x1b' (U+001B)",
        ),
        (
            "  - name: dog\n",
            '  - name: "dog\\e[31m"\n',
            10,
            "a concept: 'name' 'dog\\x1b[31m' holds the control character '\\x1b' (U+001B)",
        ),
        # a right-to-left override, which shows the text after it reversed
        (
            "[dog, puppy]",
            '[dog, "pup\\u202Epy"]',
            13,
            "concept 'dog': 'synonyms' 'pup\\u202epy' holds the control character '\\u202e' "
            "(U+202E)",
        ),
    ],
)
def test_control_characters_written_as_yaml_escapes_are_refused(
    tmp_path, replaced, by, line, message
):
    """They reached `concepts list` and `show` as they were: an escape sequence retitled or
    recoloured the terminal."""
    assert replaced in GOOD
    with pytest.raises(RegistryError) as refused:
        load_registry(write(tmp_path, GOOD.replace(replaced, by, 1)))
    assert str(refused.value) == f"{tmp_path / 'reg.yaml'}:{line}: {message}; remove it"


def test_line_breaks_and_tabs_in_a_gloss_still_load(tmp_path):
    text = GOOD.replace("    gloss: a dog\n", '    gloss: "a dog,\\tor a puppy\\n(any breed)"\n')
    assert load_registry(write(tmp_path, text)).concept("dog").gloss == (
        "a dog,\tor a puppy\n(any breed)"
    )


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "value", "holds"),
    [
        ("  - name: cat\n", '  - name: "ca\\nt"\n', 15, "name", "ca\nt", "a line break"),
        ("  - name: cat\n", '  - name: "ca\\tt"\n', 15, "name", "ca\tt", "a tab"),
        ("    category: common\n", '    category: "com\\r\\nmon"\n', 5, "category", "com\r\nmon",
         "a carriage return"),
        ("    category: common\n", '    category: common\n    label: "Ani\\nmal"\n', 6, "label",
         "Ani\nmal", "a line break"),
        ("registry: mini\n", "registry: |\n  mi\n  ni\n", 1, "registry", "mi\nni",
         "a line break"),
    ],
)  # fmt: skip
def test_a_name_holding_a_line_break_or_a_tab_is_refused(
    tmp_path, old, new, line, key, value, holds
):
    """A name is a table cell, a report.md row, a line of a message: a line break in it split
    them (the gloss and descriptions may still span lines)."""
    path = write(tmp_path, GOOD.replace(old, new, 1))
    what = {"name": "a concept", "category": "group 'Animal'", "label": "group 'Animal'"}
    with pytest.raises(RegistryError) as refused:
        load_registry(path)
    assert str(refused.value) == (
        f"{path}:{line}: {what.get(key, 'the registry file')}: {key!r} {value!r} holds {holds}; "
        f"a {key} is shown on one line (tables, report rows, messages): write it on one line"
    )


def test_a_group_template_of_the_bare_name_loads_as_zero_shot_takes_it(tmp_path):
    """``{}`` alone asks with the bare concept name (what ``--templates none`` uses): it has no
    letter, which only matters to words the matcher reads, so it was refused as one."""
    from clipaudit.zeroshot import resolve_templates

    assert resolve_templates("none") == ("{}",)
    text = GOOD.replace('["a {} object."]', '["{}", " a {} object.", "A {} object!"]')
    templates = load_registry(write(tmp_path, text)).group("Color").templates
    assert templates == ("{}", "a {} object.", "A {} object!")  # told apart as written
    path = write(tmp_path, GOOD.replace('["a {} object."]', '["{}", "a {} object.", " {} "]'))
    with pytest.raises(RegistryError) as twice:
        load_registry(path)
    assert str(twice.value) == f"{path}:8: group 'Color': 'templates' lists '{{}}' twice"


def test_a_file_that_is_not_utf8_names_the_line_of_the_first_bad_byte(tmp_path):
    """A Latin-1 "é" (what an editor saving "ANSI" writes): the line says where to retype it."""
    text = GOOD.replace("gloss: a cat", "gloss: a caf\u00e9 cat")
    path = tmp_path / "reg.yaml"
    path.write_bytes(text.encode("latin-1"))
    line = next(n for n, ln in enumerate(text.splitlines(), 1) if "\u00e9" in ln)
    byte = text.encode("latin-1").index(b"\xe9")
    with pytest.raises(RegistryError) as refused:
        load_registry(path)
    assert refused.value.line == line == 17
    assert str(refused.value) == (
        f"{path}:{line}: not UTF-8 text (invalid continuation byte at byte {byte}); save it as "
        "UTF-8"
    )


def test_the_documented_schema_names_every_key_and_loads():
    """The schema in the module's docstring is what a user writes their own registry from: each
    key the loader takes is in it (the top-level 'source' and a group's 'not_after' were not),
    and it loads as written."""
    example = textwrap.dedent(registry_module.__doc__.split("::\n\n", 1)[1].split("\n\n")[0])
    documented = yaml.safe_load(example)
    assert set(documented) == registry_module._TOP_KEYS
    assert set(documented["groups"][0]) == registry_module._GROUP_KEYS
    assert set(documented["concepts"][0]) == registry_module._CONCEPT_KEYS
    reg = parse_registry(example)
    assert reg.group("Animal").not_after == ("by",) and reg.source == "..."
    assert reg.concept("dog").not_after == ("from",)


def test_a_group_is_found_by_its_label_as_loading_compares_labels(tmp_path):
    """Loading refuses two groups whose labels normalise alike, since lookups find groups by
    normalised name or label: a label was still compared by case alone."""
    text = GOOD.replace(COLOR, "    category: common\n    label: Point-of-View\n    templates")
    reg = load_registry(write(tmp_path, text))
    assert reg.group("point of view").name == "Color"
    assert reg.select(["POINT OF VIEW"]).concepts == (reg.concept("red"),)


def test_a_concept_looked_up_by_a_groups_name_or_label_says_it_is_a_group(registry):
    colours = [c.name for c in registry.concepts if c.group == "Color"]
    assert len(colours) == 10
    with pytest.raises(RegistryError) as asked:
        registry.concept("Color")
    assert str(asked.value) == (
        "no concept 'Color' in registry 'cai2025' ('Color' is a group, not a concept; its "
        f"concepts are {', '.join(colours[:6])} and 4 more)"
    )
    with pytest.raises(RegistryError, match=r"\('pov' is a group, not a concept; its concepts "
                       r"are close-up, "):  # fmt: skip
        registry.concept("pov")  # the Viewpoint group's label


def test_concepts_are_matched_to_their_group_without_a_scan_of_the_groups(monkeypatch):
    """Each concept's group was found by scanning every group: a registry of many groups took
    quadratic time (20,000 one-concept groups: 20 s of 26 in that scan)."""
    reads = 0

    class Counted(registry_module.Group):
        def __getattribute__(self, attribute: str) -> Any:
            nonlocal reads
            reads += attribute == "name"
            return super().__getattribute__(attribute)

    monkeypatch.setattr(registry_module, "Group", Counted)
    n = 400
    text = "groups:\n" + "".join(f"  - {{name: G{i}, category: c}}\n" for i in range(n))
    text += "concepts:\n" + "".join(
        f"  - {{name: c{i}, group: G{i}, gloss: g, synonyms: [w{i}]}}\n" for i in range(n)
    )
    reg = parse_registry(text)
    assert [c.group for c in reg.concepts] == [g.name for g in reg.groups]
    assert reads < 20 * n  # a scan per concept reads n * (n + 1) / 2 = 80,200 names


def test_list_names_every_built_in_registry_but_the_file_shown(tmp_path, monkeypatch, capsys):
    """A registry of one's own called cai2025 is not the built-in cai2025: the built-in was left
    out of 'other built-in registries' by name."""
    from clipaudit.cli import main

    path = write(tmp_path, GOOD.replace("registry: mini", "registry: cai2025"))
    main(["concepts", "list", "--registry", str(path)])
    others = capsys.readouterr().out.splitlines()[-1]
    assert others == f"other built-in registries: {', '.join(list_registries())}"
    # a built-in given by a relative path is the one shown
    monkeypatch.chdir(registry_module.resolve_registry_path("miniworld").parent)
    main(["concepts", "list", "--registry", "miniworld.yaml"])
    others = capsys.readouterr().out.splitlines()[-1]
    assert others == "other built-in registries: " + ", ".join(
        name for name in list_registries() if name != "miniworld"
    )


@pytest.mark.parametrize(
    ("old", "new", "line", "what", "key", "value", "character", "found", "fix"),
    [
        # pasted from a web page: shows as "dog", but "dog" found no such concept
        ("  - name: dog\n", '  - name: "d\\u200Bog"\n', 10, "a concept", "name", "d\u200bog",
         "\u200b", "d og", "remove the invisible character"),
        # "common" beside the other group's "common": counted as two categories
        (COLOR, '    category: "com\\u00ADmon"\n    templates', 7, "group 'Color'", "category",
         "com\u00admon", "\u00ad", "common", "remove the invisible character"),
        ("    category: common\n", "    category: common\n    label: \u0410nimal\n", 6,
         "group 'Animal'", "label", "\u0410nimal", "\u0410", "nimal", "write it in Latin letters"),
    ],
)  # fmt: skip
def test_a_name_holding_a_character_lookups_cannot_see_is_refused(
    tmp_path, old, new, line, what, key, value, character, found, fix
):
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(RegistryError) as refused:
        load_registry(path)
    reads = "nothing" if character == SOFT_HYPHEN else "a word break"
    assert str(refused.value) == (
        f"{path}:{line}: {what}: {key!r} {value!r} holds the "
        f"{unicodedata.name(character).lower()} (U+{ord(character):04X}) that lookups and image "
        f"folders read as {reads}, so it is found as {found!r}; {fix}"
    )


@pytest.mark.parametrize(
    ("value", "shown", "kind"),
    [
        ("2024-13-45", "'2024-13-45'", "a date"),  # unquoted, YAML takes it for a date
        ("9" * 5000, f"'{'9' * 27}...{'9' * 28}'", "an integer"),  # past Python's 4,300 digits
        ("!!bool maybe", "'maybe'", "a boolean"),
        ("!!float abc", "'abc'", "a number"),
    ],
)
def test_a_value_yaml_cannot_build_is_one_error_at_its_line(tmp_path, value, shown, kind):
    """YAML reads these as dates, numbers or booleans and then fails to build them: PyYAML's
    ValueError or KeyError came out as a traceback."""
    path = write(tmp_path, GOOD.replace("gloss: a cat", f"gloss: {value}"))
    with pytest.raises(RegistryError) as refused:
        load_registry(path)
    assert str(refused.value) == (
        f"{path}:17: invalid YAML: {shown} reads as {kind} but is not a valid one; to keep it as "
        "text, quote it (and drop any '!!' tag)"
    )


@pytest.mark.parametrize(
    ("tagged", "expected", "found"),
    [("!!set abc", "a mapping", "scalar"), ("!!map [a]", "a mapping", "sequence"),
     ("!!seq abc", "a list", "scalar")],
)  # fmt: skip
def test_a_list_or_mapping_tag_on_another_node_is_one_error_at_its_line(
    tmp_path, tagged, expected, found
):
    path = write(tmp_path, GOOD.replace("synonyms: [cat]", f"synonyms: {tagged}"))
    tag = {"!!set": "set", "!!map": "map", "!!seq": "seq"}[tagged.split()[0]]
    with pytest.raises(RegistryError) as refused:
        load_registry(path)
    assert str(refused.value) == (
        f"{path}:18: invalid YAML: expected {expected}, but found {found} (tagged "
        f"tag:yaml.org,2002:{tag})"
    )


def test_provenance_names_the_file_wherever_the_run_was_started(tmp_path, monkeypatch):
    """A run given ``--registry mine.yaml`` recorded that relative path: a report made from
    another folder did not find the file, and so not its sensitive groups."""
    (tmp_path / "audit").mkdir()
    write(tmp_path / "audit", GOOD)
    monkeypatch.chdir(tmp_path / "audit")
    recorded = load_registry("reg.yaml").provenance()["path"]
    monkeypatch.chdir(tmp_path)
    assert recorded == str(tmp_path / "audit" / "reg.yaml")
    assert load_registry(recorded).sha256 == load_registry("audit/reg.yaml").sha256


def test_a_concept_naming_its_group_by_label_is_told_the_name(tmp_path):
    """Lookups take a group's label ('POV' for Viewpoint), so an author writes it in a concept
    too: 'unknown group', with no suggestion, sent them to declare a group that exists."""
    text = GOOD.replace(COLOR, "    category: common\n    label: Colour\n    templates")
    path = write(tmp_path, text.replace("    group: Color\n", "    group: COLOUR\n"))
    with pytest.raises(RegistryError) as refused:
        load_registry(path)
    assert str(refused.value) == (
        f"{path}:21: concept 'red': group 'COLOUR' is the label of group 'Color' (line 6); a "
        "concept names its group by name: write 'Color'"
    )
    # a name written in another case is still a spelling to suggest
    with pytest.raises(RegistryError, match=r"unknown group 'color' \(did you mean 'Color'\?\)"):
        load_registry(write(tmp_path, GOOD.replace("    group: Color\n", "    group: color\n")))


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_a_wide_file_without_a_byte_order_mark_is_named_as_such(tmp_path, encoding):
    """It decodes as UTF-8 (ASCII with NULs between): YAML then said to remove a NUL character."""
    path = tmp_path / "reg.yaml"
    path.write_bytes(GOOD.encode(encoding))
    assert not path.read_bytes().startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff"))
    with pytest.raises(RegistryError) as refused:
        load_registry(path)
    assert str(refused.value) == (
        f"{path}:1: not UTF-8 text but UTF-16 or UTF-32 without a byte-order mark (NUL bytes "
        "between its characters); save it as UTF-8"
    )
    # a NUL inside UTF-8 text is still YAML's to refuse, at its line
    path.write_bytes(GOOD.replace("gloss: a cat", "gloss: a \x00cat").encode())
    with pytest.raises(RegistryError, match=r"reg\.yaml:17: invalid YAML: .*'\\x00'"):
        load_registry(path)


def test_concepts_list_and_validate_count_in_words_that_agree(tmp_path):
    """ "1 concepts in 1 groups, 1 categories" read as a typo."""
    from typer.testing import CliRunner

    from clipaudit.cli import app

    one = tmp_path / "one.yaml"
    one.write_text(
        "registry: one\nversion: '1'\ngroups:\n  - {name: Animal, category: common}\n"
        "concepts:\n  - {name: dog, group: Animal, gloss: a dog, synonyms: [dog]}\n",
        encoding="utf-8",
    )
    runner = CliRunner()
    listed = runner.invoke(app, ["concepts", "list", "-r", str(one)])
    assert "one v1: 1 concept in 1 group" in listed.stdout
    validated = runner.invoke(app, ["concepts", "validate", str(one)])
    assert validated.exit_code == 0
    assert "1 concept in 1 group, 1 category" in " ".join(validated.stdout.split())


def test_a_concept_misspelt_like_a_group_is_pointed_to_the_group(registry, in_process):
    """`concepts show emoton` said only "no concept 'emoton'", while `concepts show Emotion`
    said it is a group: the names looked up alike are the concepts' and the groups'."""
    emotions = [c.name for c in registry.concepts if c.group == "Emotion"]
    assert len(emotions) > 6
    said = (
        "no concept 'emoton' in registry 'cai2025' (did you mean 'Emotion'?); 'Emotion' is a "
        f"group, whose concepts are {', '.join(emotions[:6])} and {len(emotions) - 6} more"
    )
    with pytest.raises(RegistryError) as asked:
        registry.concept("emoton")
    assert str(asked.value) == said
    code, _, err = in_process("concepts", "show", "emoton")
    assert code != 0 and said in " ".join(err.split())
    with pytest.raises(RegistryError) as asked:  # no group is near: the concepts alike only
        registry.concept("girafe")
    alike = did_you_mean("girafe", [c.name for c in registry.concepts])
    assert (
        "'giraffe'" in alike
        and str(asked.value) == f"no concept 'girafe' in registry 'cai2025'{alike}"
    )


def test_a_registry_file_not_found_is_told_the_files_and_built_ins_named_alike(
    tmp_path, monkeypatch, in_process
):
    """`-r my.yml` beside my.yaml said only "does not exist"."""
    (tmp_path / "my.yaml").write_text(GOOD)
    (tmp_path / "other.yaml").write_text(GOOD)
    builtins = ", ".join(list_registries())
    with pytest.raises(RegistryError) as asked:
        load_registry(tmp_path / "my.yml")
    assert str(asked.value) == (
        f"registry file {str(tmp_path / 'my.yml')!r} does not exist (did you mean "
        f"{str(tmp_path / 'my.yaml')!r}?); pass an existing YAML file or a built-in registry "
        f"name ({builtins})"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RegistryError, match=r"'my\.yml' does not exist \(did you mean 'my\.yaml'"):
        load_registry("my.yml")
    with pytest.raises(
        RegistryError, match=r"'cai2025\.yml' does not exist \(did you mean 'cai2025'"
    ):
        load_registry("cai2025.yml")
    # no suffix: a built-in was looked for, and the file of that name is suggested beside them
    with pytest.raises(
        RegistryError, match=r"no built-in registry 'my'.*\(did you mean 'my\.yaml'"
    ):
        load_registry("my")
    with pytest.raises(RegistryError) as asked:  # nothing alike: no suggestion
        load_registry("zzzz.yaml")
    assert "did you mean" not in str(asked.value)
    code, _, err = in_process("concepts", "show", "dog", "-r", "my.yml")
    assert code != 0 and "(did you mean 'my.yaml'?)" in err
