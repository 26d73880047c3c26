"""The documents tell the truth: every default they quote is the one `Settings` (or
docker-compose.yml) has, every setting they name exists, their sample output is
what the service prints, their links resolve, and the files their commands write
are ignored by git."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.__main__ import ready_line
from service.cli import ServeOptions, default_text
from tests.conftest import ROOT

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMPOSE = (ROOT / "docker-compose.yml").read_text()
SETTINGS = {f"MNIST_{name.upper()}": name for name in ServeOptions.model_fields}
# Variables that are not service settings: docker-compose's knobs, the client's,
# the load test's and training's.
OTHER_VARIABLES = {
    "MNIST_REPLICAS",
    "MNIST_PORT_LAST",
    "MNIST_URL",
    "MNIST_API_KEY",
    "MNIST_LOAD_MODEL",
    "MNIST_DATA_DIR",
}
VARIABLE = re.compile(r"`(MNIST_[A-Z0-9_]+)`")


def tables(text: str) -> list[list[list[str]]]:
    """Markdown tables as rows of cells (the header row first, the rule dropped)."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def plain(value: str) -> str:
    """A quoted value as comparable text: no backticks, no parenthesised note."""
    value = value.replace("`", "").strip()
    return value.split(" (")[0].strip() if not value.startswith("(") else value


def same(quoted: str, actual: str) -> bool:
    quoted, actual = plain(quoted), plain(actual)
    try:
        return float(quoted) == float(actual)
    except ValueError:
        return quoted == actual


def compose_default(variable: str) -> str:
    found = re.search(rf"\$\{{{variable}:-([^}}]*)\}}", COMPOSE)
    assert found, f"docker-compose.yml has no default for {variable}"
    return found.group(1)


def quoted_defaults() -> list[tuple[str, str, str, str]]:
    """(document, source, variable, quoted value) for every default a table quotes."""
    quoted = []
    for document in DOCUMENTS:
        for table in tables(document.read_text()):
            header = [cell.lower() for cell in table[0]]
            for column, source in [("default", "settings"), ("compose default", "compose")]:
                if column not in header:
                    continue
                where = header.index(column)
                for row in table[1:]:
                    variables = VARIABLE.findall(row[0])
                    values = re.split(r", |\.\.", row[where])
                    if len(values) != len(variables):
                        values = [row[where]] * len(variables)
                    for variable, value in zip(variables, values, strict=True):
                        quoted.append((document.name, source, variable, value))
    return quoted


QUOTED = quoted_defaults()


def test_the_documents_quote_defaults() -> None:
    documents = {document for document, *_ in QUOTED}
    assert {"README.md", "deployment.md"} <= documents
    assert len(QUOTED) >= 20


@pytest.mark.parametrize(("document", "source", "variable", "value"), QUOTED)
def test_a_quoted_default_is_the_real_one(
    document: str, source: str, variable: str, value: str
) -> None:
    if source == "compose":
        actual = compose_default(variable)
    else:
        assert variable in SETTINGS, f"{document}: {variable} is not a setting"
        actual = default_text(SETTINGS[variable])
    assert same(value, actual), f"{document} says {variable} defaults to {value!r}: {actual!r}"


def test_compose_passes_only_real_settings_to_the_service() -> None:
    for variable in re.findall(r"^\s+(MNIST_[A-Z0-9_]+):", COMPOSE, flags=re.MULTILINE):
        assert variable in SETTINGS, variable


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_variable_named_exists(document: Path) -> None:
    named = set(re.findall(r"\b(MNIST_[A-Z0-9_]*[A-Z0-9])\b", document.read_text()))
    unknown = named - set(SETTINGS) - OTHER_VARIABLES
    assert not unknown, f"{document.name} names variables that do not exist: {sorted(unknown)}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_relative_link_resolves(document: Path) -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text()):
        if not re.match(r"[a-z]+:", target):
            assert (document.parent / target).exists(), f"{document.name}: {target}"


def readme_block_after(marker: str, language: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(marker)
    block = re.search(rf"```{language}\n(.*?)```", text[start:], flags=re.DOTALL)
    assert block, f"no {language} block after {marker!r}"
    return block.group(1)


def test_the_readme_sample_answer_is_what_the_service_prints(client: TestClient) -> None:
    command = readme_block_after("In a second terminal", "bash").strip()
    image = re.search(r"file=@(\S+)", command)
    assert image, command
    shown = json.loads(readme_block_after(command, "json"))
    with (ROOT / image.group(1)).open("rb") as file:
        answer = client.post("/v1/predict", files={"file": ("digit.png", file, "image/png")})
    printed = answer.json()
    assert list(shown) == list(printed)  # the same fields, in the same order
    assert shown["digit"] == printed["digit"] and shown["uncertain"] == printed["uncertain"]
    assert shown["model"]["name"] == printed["model"]["name"]
    # A retrained model moves the last decimals; anything more means the README is stale.
    assert shown["confidence"] == pytest.approx(printed["confidence"], abs=1e-3)
    assert shown["probabilities"] == pytest.approx(printed["probabilities"], abs=1e-3)
    for number in [shown["confidence"], *shown["probabilities"]]:
        assert round(number, 6) == number


def test_the_readme_ready_line_is_the_one_printed() -> None:
    shown = readme_block_after("Once the model is loaded", "").strip()
    expected = ready_line("http://127.0.0.1:8000")
    assert re.sub(r"mnist-serve \S+ ", "", shown) == re.sub(r"mnist-serve \S+ ", "", expected)


def test_load_test_outputs_are_ignored_by_git() -> None:
    outputs = []
    for document in DOCUMENTS:
        joined = document.read_text().replace("\\\n", " ")  # shell line continuations
        for command in re.findall(r"^locust .*$", joined, flags=re.MULTILINE):
            words = shlex.split(command, comments=True)
            for option in ("--csv", "--html"):
                if option in words:
                    outputs.append(words[words.index(option) + 1])
    assert len(outputs) >= 4, outputs
    for output in outputs:
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", "--no-index", output], cwd=ROOT, check=False
        )
        assert ignored.returncode == 0, f"{output} would show up as untracked in git"
