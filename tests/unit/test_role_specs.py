"""Every role keeps meta/argument_specs.yml in step with defaults/main.yml: each default is an option of some entry
point, with the same default, and the main entry point documents no option the role does not default."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = sorted(p.parent.parent for p in (Path(__file__).resolve().parents[2] / "roles").glob("*/defaults/main.yml"))


def specs(role: Path) -> dict:
    return yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]


@pytest.mark.unit
@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_every_default_is_a_documented_option_with_the_same_default(role):
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    options = {name: spec for entry in specs(role).values() for name, spec in (entry.get("options") or {}).items()}
    assert sorted(set(defaults) - set(options)) == []
    assert {k: (v, options[k]["default"]) for k, v in defaults.items()
            if "default" in options[k] and options[k]["default"] != v} == {}


@pytest.mark.unit
@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_the_main_entry_point_documents_only_defaulted_options(role):
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    main = specs(role).get("main", {}).get("options") or {}
    assert sorted(set(main) - set(defaults)) == []
