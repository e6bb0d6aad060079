from pathlib import Path

import pytest

from noa.config import ConfigError, NoaConfig, load_config, parse_config


def test_default_config_is_the_embedded_default() -> None:
    config = NoaConfig()
    assert set(config.providers) == {"openai", "anthropic", "local"}
    assert config.models[0].id == "local/smollm2-135m-instruct"
    assert config.models[0].aliases == ["smollm2"]
    assert config.server.host == "127.0.0.1"
    assert config.server.max_body_bytes == 10 * 1024 * 1024
    assert config.deployment.hot_path == "inline"


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"sever": {}}, "sever: unknown key"),
        ({"server": {"prot": 1}}, "server.prot: unknown key"),
        ({"providers": {"x": {"kind": "openai", "api_key": "sk"}}}, "providers.x.openai.api_key"),
        ({"deployment": {"llamacpp": {"gpus": 1}}}, "deployment.llamacpp.gpus: unknown key"),
        ({"models": [{"id": "m", "provider": "local", "upstream": "u", "price": 1}]}, "price"),
    ],
)
def test_unknown_keys_are_errors_that_name_the_key(data: dict, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert named in str(info.value)


def test_provider_kind_is_a_discriminator() -> None:
    with pytest.raises(ConfigError, match=r"providers\.x"):
        parse_config({"providers": {"x": {"kind": "cohere"}}})
    config = parse_config({"providers": {"x": {"kind": "anthropic", "default_max_tokens": 99}}})
    assert config.providers["x"].kind == "anthropic"


def test_models_must_reference_configured_providers_and_unique_names() -> None:
    with pytest.raises(ConfigError, match="'nope' is not in providers"):
        parse_config({"models": [{"id": "m", "provider": "nope", "upstream": "u"}]})
    dup = [
        {"id": "a", "provider": "local", "upstream": "u"},
        {"id": "b", "aliases": ["a"], "provider": "local", "upstream": "u"},
    ]
    with pytest.raises(ConfigError, match="already used"):
        parse_config({"models": dup})


def test_secrets_come_from_the_environment_only() -> None:
    config = NoaConfig()
    openai = config.providers["openai"]
    assert openai.api_key({}) is None
    key = openai.api_key({"OPENAI_API_KEY": "sk-test"})
    assert key is not None and key.get_secret_value() == "sk-test"
    assert "sk-test" not in repr(key)
    assert openai.resolved_base_url({"OPENAI_BASE_URL": "http://x/v1"}) == "http://x/v1"
    assert config.auth.master_key({"NOA_MASTER_KEY": " "}) is None


def test_load_config_reads_noa_files_and_serve_configs(tmp_path: Path) -> None:
    plain = tmp_path / "noa.yaml"
    plain.write_text("server:\n  port: 9000\n")
    assert load_config(plain).server.port == 9000
    root = Path(__file__).resolve().parents[2]
    serve = load_config(root / "serve_config.yaml")
    assert serve.models[0].id == "local/smollm2-135m-instruct"
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
