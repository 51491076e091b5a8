"""Provisioning: one YAML tree, validated into typed objects."""

from provisioning.loader import ConfigError, load_config
from provisioning.schema import Config

__all__ = ["Config", "ConfigError", "load_config"]
