"""Config helpers for models saved by older versions of medlsdm (diffusers ``ConfigMixin``)."""

from __future__ import annotations

from collections.abc import Mapping

from diffusers.configuration_utils import ConfigMixin


def register_config_values(model: ConfigMixin, **values) -> None:
    """``model.register_to_config(**values)``, also dropping the entries from the config's
    ``_use_default_values`` (where diffusers lists entries a loaded config lacked), so that
    ``type(model).from_config(model.config)`` keeps the values instead of the defaults."""
    defaults = [k for k in model.config.get("_use_default_values", []) if k not in values]
    model.register_to_config(**values, _use_default_values=defaults)


class RenamedConfigMixin:
    """Reads configs saved before some entries were renamed (``_renamed_config = {old: new}``).

    diffusers ignores config entries that ``__init__`` does not take (with a warning), so an
    old entry's value would silently give way to the new entry's default.
    """

    _renamed_config: dict[str, str] = {}

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        if isinstance(config, Mapping) and any(old in config for old in cls._renamed_config):
            config = dict(config)
            for old, new in cls._renamed_config.items():
                if old in config:
                    config.setdefault(new, config.pop(old))
        return super().from_config(config, return_unused_kwargs, **kwargs)
