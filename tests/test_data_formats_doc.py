"""docs/data-formats.md stays true to the code: every schema is named there with its version and
every one of its columns is listed in its section."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import aigi.manifests.schema as schema_module
from aigi.manifests.export import EXPORT
from aigi.manifests.schema import Schema

DOC = Path(__file__).resolve().parents[1] / "docs" / "data-formats.md"

SCHEMAS = [v for v in vars(schema_module).values() if isinstance(v, Schema)] + [EXPORT]


def _text() -> str:
    return DOC.read_text(encoding="utf-8")


def section(text: str, marker: str) -> str:
    """The section (a `##` or `###` heading and what follows, up to the next such heading) whose
    heading holds `marker`."""
    parts = re.split(r"^(?=#{2,3} )", text, flags=re.MULTILINE)
    found = [p for p in parts if marker in p.splitlines()[0]]
    assert len(found) == 1, f"docs/data-formats.md: {len(found)} headings hold {marker!r}, expected one"
    return found[0]


def test_every_schema_of_the_module_is_checked() -> None:
    assert {s.name for s in SCHEMAS} >= set(schema_module.REGISTRY)
    assert len({s.name for s in SCHEMAS}) == len(SCHEMAS)


@pytest.mark.parametrize("schema", SCHEMAS, ids=[s.name for s in SCHEMAS])
def test_schema_is_documented_with_version_and_every_column(schema: Schema) -> None:
    body = section(_text(), f"`{schema.name}` v{schema.version}")
    missing = [c for c in schema.arrow.names if f"`{c}`" not in body]
    assert not missing, f"{schema.name} v{schema.version}: columns not in its section of the doc: {missing}"


def test_no_stale_schema_version_is_named() -> None:
    """A heading naming a schema with another version than the code's is stale."""
    versions = {s.name: s.version for s in SCHEMAS}
    for name, version in re.findall(r"^#{2,3} .*?`(aigi\.[a-z_.]+)` v(\d+)", _text(), flags=re.MULTILINE):
        if name in versions:
            assert int(version) == versions[name], f"the doc says {name} v{version}, the code v{versions[name]}"


def test_feature_store_section() -> None:
    from aigi.features.registry import get, names
    from aigi.features.store import SCHEMA_PREFIX

    body = section(_text(), f"`{SCHEMA_PREFIX}<extractor>`")
    for col in ("image_id", "seed"):
        assert f"`{col}`" in body
    for key in ("shapes", "dtypes", "extractor", "version", "config", "preprocessing", "model_revision", "input"):
        assert f"`{key}`" in body, key
    versions = {}
    for name in names():
        assert f"| `{name}` |" in body, f"feature extractor {name} is not in the feature store section"
        try:
            versions[name] = get(name).version
        except ImportError:  # an optional dependency missing here: nothing to compare
            continue
    if "1 for every extractor today" in body:
        assert set(versions.values()) == {1}, versions


def test_webdataset_export_section() -> None:
    from aigi.manifests.export_wds import WDS_FORMAT, WDS_VERSION

    body = section(_text(), f"`{WDS_FORMAT}` v{WDS_VERSION}")
    for member in ("<image_id>.<ext>", "<image_id>.json", "<image_id>.cls", "<image_id>.mask.<ext>"):
        assert f"`{member}`" in body


def test_run_directory_paths_are_named() -> None:
    from aigi.manifests.rundir import RunDir

    rd = RunDir(Path("RUN"))
    text = _text()
    for attr in ("config", "run_json", "prompts", "images", "curation", "features", "detectors",
                 "quarantine", "logs", "models"):
        rel = getattr(rd, attr).relative_to(rd.root).as_posix()
        assert rel in text, f"RunDir.{attr} ({rel}) is not in the doc"
