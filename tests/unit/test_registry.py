import pytest

from noa.config import parse_config
from noa.errors import InvalidRequestError, ModelNotFoundError
from noa.registry import ModelRegistry, ProviderInfo

CONFIG = parse_config(
    {
        "models": [
            {
                "id": "local/smollm2-135m-instruct",
                "aliases": ["smollm2"],
                "provider": "local",
                "upstream": "smollm2-135m-instruct",
            },
            {"id": "gpt", "provider": "openai", "upstream": "gpt-4o-mini"},
            {"id": "claude", "provider": "anthropic", "upstream": "claude-x"},
        ]
    }
)


def registry(openai: bool = True) -> ModelRegistry:
    infos = [
        ProviderInfo("openai", "openai", openai, "" if openai else "set OPENAI_API_KEY"),
        ProviderInfo("anthropic", "anthropic", True),
        ProviderInfo("local", "llamacpp", True),
    ]
    return ModelRegistry(CONFIG.models, infos, {"local": ["smollm2-135m-instruct", "extra"]})


def test_ids_aliases_and_prefixes_resolve() -> None:
    r = registry()
    assert r.resolve("smollm2", "chat").model_id == "local/smollm2-135m-instruct"
    assert r.resolve("local/smollm2-135m-instruct", "chat").upstream == "smollm2-135m-instruct"
    route = r.resolve("openai/gpt-4.1", "chat")
    assert (route.provider, route.upstream, route.model_id) == (
        "openai",
        "gpt-4.1",
        "openai/gpt-4.1",
    )
    assert r.resolve("local/other-gguf", "embeddings").upstream == "other-gguf"
    assert r.resolve("gpt", "chat").upstream == "gpt-4o-mini"


def test_unknown_models_are_404_with_a_useful_message() -> None:
    with pytest.raises(ModelNotFoundError) as info:
        registry().resolve("nope", "chat")
    assert info.value.status_code == 404 and info.value.param == "model"
    assert "anthropic, local, openai" in info.value.message
    with pytest.raises(ModelNotFoundError):
        registry().resolve("cohere/command", "chat")


def test_disabled_provider_says_how_to_enable_it() -> None:
    with pytest.raises(ModelNotFoundError, match="set OPENAI_API_KEY"):
        registry(openai=False).resolve("openai/gpt-4o", "chat")
    with pytest.raises(ModelNotFoundError, match="set OPENAI_API_KEY"):
        registry(openai=False).resolve("gpt", "chat")


def test_capabilities_are_checked() -> None:
    with pytest.raises(InvalidRequestError, match="does not support embeddings"):
        registry().resolve("claude", "embeddings")
    with pytest.raises(InvalidRequestError, match="does not support completions"):
        registry().resolve("anthropic/claude-x", "completions")


def test_models_list_shows_enabled_models_and_local_files() -> None:
    ids = [m["id"] for m in registry(openai=False).list_models()]
    assert ids == ["local/smollm2-135m-instruct", "claude", "local/extra"]
    card = registry().get_model("smollm2")
    assert card["id"] == "local/smollm2-135m-instruct" and card["object"] == "model"
    assert registry().get_model("local/extra")["owned_by"] == "llamacpp"
    with pytest.raises(ModelNotFoundError):
        registry().get_model("local/none")
