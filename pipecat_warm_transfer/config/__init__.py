#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A voice bot with a warm transfer, declared in YAML.

- `load_config(path)` → `LoadedConfig` (or `ConfigError` listing every problem as
  `FILE:LINE: field.path: problem`).
- `bot_config_schema()` → the JSON Schema of the YAML.
- `transfer_settings(config)` / `LoadedConfig.transfer_settings()` → the
  `TransferTarget`, `WarmTransferParams`, `BriefingParams` options and hold music.
- `build_service(kind, provider, options, settings)` → a Pipecat service by name.
"""

from pipecat_warm_transfer.config.loader import (
    ConfigError,
    ConfigProblem,
    Location,
    SourceMap,
    load_yaml,
)
from pipecat_warm_transfer.config.schema import (
    BotConfig,
    bot_config_schema,
    parse_duration,
)
from pipecat_warm_transfer.config.services import (
    ProviderSpec,
    ServiceBuildError,
    build_service,
    check_service,
    known_providers,
    resolve_provider,
)
from pipecat_warm_transfer.config.settings import (
    HoldMusicSettings,
    TransferSettings,
    transfer_settings,
)
from pipecat_warm_transfer.config.validate import LoadedConfig, load_config, validate_config_file

__all__ = [
    "BotConfig",
    "ConfigError",
    "ConfigProblem",
    "HoldMusicSettings",
    "LoadedConfig",
    "Location",
    "ProviderSpec",
    "ServiceBuildError",
    "SourceMap",
    "TransferSettings",
    "bot_config_schema",
    "build_service",
    "check_service",
    "known_providers",
    "load_config",
    "load_yaml",
    "parse_duration",
    "resolve_provider",
    "transfer_settings",
    "validate_config_file",
]
