import json

import pytest

from taskmem_lab.backends import make_model
from taskmem_lab.backends.endpoints import endpoints_for, parse_spec_name, read_config
from taskmem_lab.errors import ConfigError, ModelSpecError


def test_our_format_with_key_from_environment(tmp_path, monkeypatch):
    cfg = tmp_path / "e.yaml"
    cfg.write_text(
        "endpoints:\n  gpt-4o:\n    base_url: http://127.0.0.1:9/v1\n    api_key_env: MY_KEY\n"
        "    video: mp4\n    max_concurrency: 3\n"
    )
    monkeypatch.setenv("MY_KEY", "secret-value")
    (ep,) = endpoints_for("gpt-4o", read_config(cfg))
    assert ep.model == "gpt-4o" and ep.video == "mp4" and ep.max_concurrency == 3
    assert ep.api_key == "secret-value"
    assert "secret-value" not in repr(ep)


def test_missing_key_variable_is_named(tmp_path, monkeypatch):
    cfg = tmp_path / "e.yaml"
    cfg.write_text("endpoints:\n  m:\n    base_url: http://x/v1\n    api_key_env: NOT_SET_KEY\n")
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    with pytest.raises(ConfigError, match="NOT_SET_KEY"):
        endpoints_for("m", read_config(cfg))


def test_original_api_config_format_single_and_list(tmp_path):
    cfg = tmp_path / "api_config.json"
    cfg.write_text(
        json.dumps(
            {
                "gpt-4o-2024-11-20": {
                    "azure_endpoint": "https://a.example",
                    "api_version": "2024-10-21",
                    "api_key": "k1",
                },
                "gpt-5": [
                    {
                        "azure_endpoint": "https://b.example",
                        "api_version": "2025-01-01",
                        "api_key": "k2",
                    },
                    {
                        "azure_endpoint": "https://c.example",
                        "api_version": "2025-01-01",
                        "api_key": "k3",
                    },
                ],
            }
        )
    )
    config = read_config(cfg)
    (one,) = endpoints_for("gpt-4o-2024-11-20", config)
    assert one.api_type == "azure" and one.azure_endpoint == "https://a.example"
    many = endpoints_for("gpt-5#high#low", config)
    assert [e.azure_endpoint for e in many] == ["https://b.example", "https://c.example"]
    assert all(e.model == "gpt-5" for e in many)


def test_spec_suffixes():
    assert parse_spec_name("gpt-5#high#low") == parse_spec_name("gpt-5#high#low")
    s = parse_spec_name("gpt-5#high#low")
    assert (s.name, s.effort, s.verbosity, s.think) == ("gpt-5", "high", "low", False)
    s = parse_spec_name("gpt-5#minimal")
    assert (s.effort, s.verbosity) == ("minimal", None)
    s = parse_spec_name("qwen3-vl#think")
    assert s.think and s.name == "qwen3-vl" and s.effort is None
    with pytest.raises(ConfigError):
        parse_spec_name("a#b#c#d")


def test_missing_config_and_unknown_names(tmp_path, monkeypatch):
    monkeypatch.delenv("TASKMEM_API_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TASKMEM_API_CONFIG"):
        read_config()
    cfg = tmp_path / "e.yaml"
    cfg.write_text("endpoints:\n  a:\n    base_url: http://x/v1\n    api_key: k\n")
    with pytest.raises(ConfigError, match="no endpoint named 'b'.*known: a"):
        endpoints_for("b", read_config(cfg))


def test_unknown_model_spec():
    with pytest.raises(ModelSpecError, match="unknown model spec"):
        make_model("nope:thing")
    with pytest.raises(ModelSpecError, match="needs a name"):
        make_model("openai:")
