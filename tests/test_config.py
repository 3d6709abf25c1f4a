from __future__ import annotations

import re

import pytest

from cxnlp.config import Config, load_config, parse_overrides
from cxnlp.errors import ConfigError
from tests.conftest import ROOT


def test_config_default_yaml_matches_the_defaults():
    assert load_config(ROOT / "pipelines" / "default.yaml") == Config()


def test_config_every_key_in_default_yaml_is_commented():
    for line in (ROOT / "pipelines" / "default.yaml").read_text().splitlines():
        if re.match(r"^\s*[a-z_]+:", line):
            assert "#" in line, f"uncommented key: {line!r}"


def test_config_overrides_are_typed():
    config = load_config(
        overrides=["cluster.min_cluster_size=5", "cluster.scope=all", "input.fields.text=body"]
    )
    assert (
        config.cluster.min_cluster_size == 5
        and config.cluster.scope == "all"
        and config.input.fields.text == "body"
    )


def test_config_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError) as exc:
        load_config(overrides=["cluster.min_clustr_size=5"])
    assert str(exc.value).startswith(
        "[E001] Config key 'min_clustr_size' is not known in section 'cluster'. Did you mean 'min_cluster_size'?"
    )
    assert exc.value.exit_code == 2


def test_config_bad_value_names_the_key():
    with pytest.raises(ConfigError, match=r"\[E002\] Config value for 'cluster.scope' is invalid"):
        load_config(overrides=["cluster.scope=everything"])


def test_config_override_syntax_error():
    with pytest.raises(ConfigError, match=r"\[E004\]"):
        parse_overrides(["cluster.scope"])
