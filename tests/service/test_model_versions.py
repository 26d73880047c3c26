"""Version policy, the repository's version folders, and the card/folder check."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.config import Settings
from service.errors import ModelLoadError
from service.model import list_versions, selected_folders, verify_model_files
from service.model_card import read_card, write_card
from service.versions import VersionPolicy, snapshot
from tests.conftest import MODELS, ROOT
from tests.service.repository_support import NAME, add_version, new_repository, stage_version


@pytest.mark.parametrize(
    ("text", "present", "served", "normal"),
    [
        ("latest", [1, 2, 3], [3], "latest"),
        ("latest:2", [3, 1, 2], [2, 3], "latest:2"),
        ("LATEST:5", [1, 2], [1, 2], "latest:5"),
        ("all", [2, 1], [1, 2], "all"),
        ("specific:3,1", [1, 2, 3], [1, 3], "specific:1,3"),
        ("specific:7", [1, 2], [], "specific:7"),
        ("latest", [], [], "latest"),
    ],
)
def test_policies_pick_versions(
    text: str, present: list[int], served: list[int], normal: str
) -> None:
    policy = VersionPolicy.parse(text)
    assert policy.select(present) == served
    assert str(policy) == normal
    assert VersionPolicy.parse(str(policy)) == policy


@pytest.mark.parametrize(
    "text", ["newest", "latest:0", "latest:x", "specific:", "specific:0", "all:2"]
)
def test_bad_policies_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"version policy"):
        VersionPolicy.parse(text)
    with pytest.raises(ValidationError):
        Settings(version_policy=text)


def test_triton_version_policy_json() -> None:
    assert VersionPolicy.from_triton({"latest": {"num_versions": 2}}) == VersionPolicy.latest(2)
    assert VersionPolicy.from_triton({"latest": {}}) == VersionPolicy.latest(1)
    assert VersionPolicy.from_triton({"all": {}}) == VersionPolicy("all")
    # protobuf's JSON writes int64 as strings
    specific = VersionPolicy.from_triton({"specific": {"versions": ["1", 3]}})
    assert specific == VersionPolicy.specific([1, 3])
    bad_policies: list[dict[str, Any]] = [
        {},
        {"newest": {}},
        {"latest": {}, "all": {}},
        {"specific": {"versions": []}},
    ]
    for bad in bad_policies:
        with pytest.raises(ValueError):
            VersionPolicy.from_triton(bad)


def test_model_version_is_shorthand_for_a_specific_policy() -> None:
    assert Settings(model_version=2).served_policy() == VersionPolicy.specific([2])
    assert Settings().served_policy() == VersionPolicy.latest(1)
    with pytest.raises(ValidationError, match="not both"):
        Settings(model_version=2, version_policy="all")


def test_the_repository_api_is_off_unless_keys_or_a_setting_turn_it_on(tmp_path: Path) -> None:
    assert not Settings().repository_api_enabled()
    assert Settings(api_keys="k").repository_api_enabled()
    keys = tmp_path / "keys"
    keys.write_text("k\n")
    assert Settings(api_keys_file=keys).repository_api_enabled()
    assert Settings(repository_api=True).repository_api_enabled()
    assert not Settings(repository_api=False, api_keys="k").repository_api_enabled()


def test_selected_folders_follow_the_policy(tmp_path: Path) -> None:
    repository = new_repository(tmp_path)
    add_version(repository, 3)
    (repository / NAME / "2").mkdir()  # no card: not a version
    (repository / NAME / "notes").mkdir()
    assert list(selected_folders(repository, NAME, VersionPolicy.latest())) == [3]
    assert list(selected_folders(repository, NAME, VersionPolicy("all"))) == [1, 3]
    with pytest.raises(
        ModelLoadError, match=r"matches the version policy specific:2 \(present: 1, 3\)"
    ):
        selected_folders(repository, NAME, VersionPolicy.specific([2]))
    with pytest.raises(ModelLoadError, match="not a plain name"):
        selected_folders(repository, "../models", VersionPolicy.latest())


def test_a_copied_folder_must_carry_its_own_version_in_the_card(tmp_path: Path) -> None:
    repository = new_repository(tmp_path)
    copy = repository / NAME / "2"
    shutil.copytree(repository / NAME / "1", copy)  # copied, card not updated
    with pytest.raises(ModelLoadError, match="says version 1 but lies in folder 2"):
        verify_model_files(copy)
    card = read_card(copy)
    write_card(copy, card.model_copy(update={"version": 2, "name": "other"}))
    with pytest.raises(ModelLoadError, match="names model 'other'"):
        verify_model_files(copy)
    write_card(copy, card.model_copy(update={"version": 2}))
    assert verify_model_files(copy).card.version == 2


def test_a_snapshot_changes_while_a_version_is_written_and_settles_after(tmp_path: Path) -> None:
    repository = new_repository(tmp_path)
    before = snapshot(repository, NAME)
    staged = stage_version(repository, 2)
    target = repository / NAME / "2"
    target.mkdir()
    (target / "model.json").write_bytes((staged / "model.json").read_bytes())
    half = snapshot(repository, NAME)
    assert set(half) == {1, 2} and half[1] == before[1]
    for file in staged.iterdir():  # the rest of the copy arrives
        (target / file.name).write_bytes(file.read_bytes())
    done = snapshot(repository, NAME)
    assert done[2] != half[2]
    assert snapshot(repository, NAME) == done  # nothing changes any more: settled


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--version-policy", "specific:9"],
            "matches the version policy specific:9 (present: "
            + ", ".join(map(str, list_versions(MODELS, NAME)))
            + ")",
        ),
        (["--version-policy", "newest"], "--version-policy / MNIST_VERSION_POLICY"),
    ],
)
def test_a_policy_that_serves_nothing_stops_the_start_with_one_line(
    args: list[str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service", "--port", "0", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
