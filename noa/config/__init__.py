"""NOA's configuration, one pydantic tree: ``NoaConfig`` and the parts it is made of.

root.py        NoaConfig (the whole tree), parse_config, load_config, ConfigError
providers.py   OpenAI, Anthropic and llama.cpp providers, their accounts' limits
models.py      models, chains, prices, client limits; the bundled SmolLM2
routing.py     groups, retries, deadlines, breakers
access.py      auth (master key, API keys, JWT), limits, usage
storage.py     cache tiers, Redis, the database
deployment.py  the HTTP server and the Serve graph's sizing
jobs.py        the job system: runners, retries, webhooks, files and batches
queues.py      queue bridges (RabbitMQ, Kafka, SQS, Redis Streams)
"""

from noa.config.access import (
    AuthConfig,
    JwtAlgorithm,
    JwtClaims,
    JwtConfig,
    LimitsConfig,
    UsageConfig,
)
from noa.config.base import Strict, env_secret
from noa.config.deployment import (
    DeploymentConfig,
    HotPath,
    LlamaReplicaConfig,
    ReplicaConfig,
    ServerConfig,
)
from noa.config.jobs import JobsConfig, WebhookConfig
from noa.config.models import (
    BUNDLED_MODEL_NAME,
    Capability,
    ChainEntry,
    ClientLimits,
    ModelConfig,
    Price,
    Strategy,
    bundled_model,
)
from noa.config.providers import (
    DEFAULT_CAPABILITIES,
    AnthropicProviderConfig,
    CloudProviderConfig,
    LlamaCppProviderConfig,
    OpenAIProviderConfig,
    ProviderConfig,
    ProviderLimits,
)
from noa.config.queues import BridgeScaling, BrokerKind, QueueBridgeConfig
from noa.config.root import ConfigError, NoaConfig, load_config, parse_config
from noa.config.routing import BreakerConfig, GroupConfig, RoutingConfig
from noa.config.storage import (
    HOME_ENV,
    CacheConfig,
    CachePolicy,
    CacheTierConfig,
    DatabaseConfig,
    RedisConfig,
    SingleFlightConfig,
    noa_home,
)

__all__ = [
    "BUNDLED_MODEL_NAME",
    "DEFAULT_CAPABILITIES",
    "HOME_ENV",
    "AnthropicProviderConfig",
    "AuthConfig",
    "BreakerConfig",
    "BridgeScaling",
    "BrokerKind",
    "CacheConfig",
    "CachePolicy",
    "CacheTierConfig",
    "Capability",
    "ChainEntry",
    "ClientLimits",
    "CloudProviderConfig",
    "ConfigError",
    "DatabaseConfig",
    "DeploymentConfig",
    "GroupConfig",
    "HotPath",
    "JobsConfig",
    "JwtAlgorithm",
    "JwtClaims",
    "JwtConfig",
    "LimitsConfig",
    "LlamaCppProviderConfig",
    "LlamaReplicaConfig",
    "ModelConfig",
    "NoaConfig",
    "OpenAIProviderConfig",
    "Price",
    "ProviderConfig",
    "ProviderLimits",
    "QueueBridgeConfig",
    "RedisConfig",
    "ReplicaConfig",
    "RoutingConfig",
    "ServerConfig",
    "SingleFlightConfig",
    "Strategy",
    "Strict",
    "UsageConfig",
    "WebhookConfig",
    "bundled_model",
    "env_secret",
    "load_config",
    "noa_home",
    "parse_config",
]
