import pytest

from noa.config import ConfigError, parse_config
from noa.errors import InvalidRequestError, ModelNotFoundError
from noa.routing.plan import Candidate, Target
from noa.routing.registry import ModelRegistry, ProviderInfo

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


def only(plan: Target) -> Candidate:
    assert len(plan.candidates) == 1
    return plan.candidates[0]


def test_ids_aliases_and_prefixes_resolve() -> None:
    r = registry()
    assert only(r.resolve("smollm2", "chat")).model_id == "local/smollm2-135m-instruct"
    assert (
        only(r.resolve("local/smollm2-135m-instruct", "chat")).upstream == "smollm2-135m-instruct"
    )
    route = only(r.resolve("openai/gpt-4.1", "chat"))
    assert (route.provider, route.upstream, route.model_id) == (
        "openai",
        "gpt-4.1",
        "openai/gpt-4.1",
    )
    assert only(r.resolve("local/other-gguf", "embeddings")).upstream == "other-gguf"
    assert only(r.resolve("gpt", "chat")).upstream == "gpt-4o-mini"


CHAINED = parse_config(
    {
        "models": [
            {
                "id": "smart",
                "chain": [
                    {"provider": "openai", "upstream": "gpt-4o"},
                    {"provider": "anthropic", "upstream": "claude-x"},
                    {"provider": "local", "upstream": "smollm2-135m-instruct"},
                ],
                "price": {"input": 2.5, "output": 10},
                "tags": ["frontier"],
            },
            {"id": "embed", "provider": "openai", "upstream": "text-embedding-3-small"},
            {"id": "small", "provider": "local", "upstream": "smollm2-135m-instruct"},
        ],
        "routing": {
            "groups": [{"id": "cheap", "models": ["small", "smart"], "strategy": "least-cost"}]
        },
    }
)


def chained(openai: bool = True) -> ModelRegistry:
    infos = [
        ProviderInfo("openai", "openai", openai, "" if openai else "set OPENAI_API_KEY"),
        ProviderInfo("anthropic", "anthropic", True),
        ProviderInfo("local", "llamacpp", True),
    ]
    return ModelRegistry(CHAINED.models, infos, {}, CHAINED.routing)


def test_a_chain_resolves_to_its_enabled_entries_in_order() -> None:
    plan = chained().resolve("smart", "chat")
    assert [c.key for c in plan.candidates] == [
        "openai/gpt-4o",
        "anthropic/claude-x",
        "local/smollm2-135m-instruct",
    ]
    assert {c.model_id for c in plan.candidates} == {"smart"}
    assert plan.candidates[0].price is not None and plan.candidates[0].price.output == 10
    # without an OpenAI key its entry drops out; the rest still serve the model
    assert [c.provider for c in chained(openai=False).resolve("smart", "chat").candidates] == [
        "anthropic",
        "local",
    ]
    with pytest.raises(ModelNotFoundError, match="set OPENAI_API_KEY"):
        chained(openai=False).resolve("embed", "embeddings")


def test_entries_that_cannot_do_the_operation_drop_out() -> None:
    # the model declares its first provider's capabilities (openai: embeddings too), but
    # Anthropic has no embeddings endpoint
    plan = chained().resolve("smart", "embeddings")
    assert [c.provider for c in plan.candidates] == ["openai", "local"]


def test_groups_and_auto_span_their_models() -> None:
    plan = chained().resolve("cheap", "chat")
    assert plan.strategy == "least-cost"
    assert [c.model_id for c in plan.candidates] == ["small", "smart", "smart", "smart"]
    auto = chained().resolve("auto", "embeddings")
    assert [c.key for c in auto.candidates] == [
        "openai/gpt-4o",
        "local/smollm2-135m-instruct",
        "openai/text-embedding-3-small",
        "local/smollm2-135m-instruct",
    ]
    ids = [m["id"] for m in chained().list_models()]
    assert ids == ["smart", "embed", "small", "cheap"]
    card = chained().get_model("smart")
    assert card["chain"][1] == {"provider": "anthropic", "upstream": "claude-x"}
    assert card["pricing"] == {"input_per_million": 2.5, "output_per_million": 10.0}
    assert card["tags"] == ["frontier"]
    assert chained().get_model("cheap")["group"] == ["small", "smart"]


def test_chain_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="not both"):
        parse_config(
            {
                "models": [
                    {
                        "id": "x",
                        "provider": "local",
                        "upstream": "a",
                        "chain": [{"provider": "local", "upstream": "b"}],
                    }
                ]
            }
        )
    with pytest.raises(ConfigError, match="'nope' is not in providers"):
        parse_config({"models": [{"id": "x", "chain": [{"provider": "nope", "upstream": "b"}]}]})
    with pytest.raises(ConfigError, match="not among the configured models"):
        parse_config({"routing": {"groups": [{"id": "g", "models": ["ghost"]}]}})


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
