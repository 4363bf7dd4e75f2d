"""Model registry: a name -> class table, and the constructor arguments of every instance.

Constructor arguments are the configuration: ``register_model`` records them when an instance is
built, ``build_model(name, config)`` rebuilds it and rejects keys the constructor does not take.

>>> from pyro_gen.models import build_model
>>> vae = build_model("vae", {"data_shape": [1, 8, 8], "latent_dim": 2, "hidden": [16]})
>>> vae.config["latent_dim"]
2
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from pyro_gen.errors import ConfigError, did_you_mean

__all__ = ["register_model", "get_model_class", "build_model", "model_config", "MODELS"]

MODELS: dict[str, type] = {}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def register_model(name: str):
    """Class decorator: register ``cls`` under ``name`` and record its constructor arguments.

    The recorded arguments are available as ``instance.config`` (a JSON-able dict) and are what
    ``save_model`` writes to ``config.json``.
    """

    def decorator(cls: type) -> type:
        if name in MODELS and MODELS[name] is not cls:
            raise ConfigError(f"a model named {name!r} is already registered ({MODELS[name]}).")
        init = cls.__init__
        signature = inspect.signature(init)

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            config = {}
            for key, value in list(bound.arguments.items())[1:]:
                kind = signature.parameters[key].kind
                if kind is inspect.Parameter.VAR_KEYWORD:
                    config.update(value)
                elif kind is inspect.Parameter.VAR_POSITIONAL:
                    raise ConfigError(
                        f"{cls.__name__} takes *{key}; a config needs named arguments."
                    )
                else:
                    config[key] = value
            init(self, *args, **kwargs)
            # The outermost (most derived) constructor runs this last, so its arguments win.
            object.__setattr__(self, "_pyro_gen_config", (name, _jsonable(config)))

        cls.__init__ = __init__
        cls.model_name = name
        MODELS[name] = cls
        return cls

    return decorator


def get_model_class(name: str) -> type:
    """The class registered under ``name``; a clear error lists the names there are."""
    if name not in MODELS:
        raise ConfigError(
            f"unknown model {name!r}; registered models are {sorted(MODELS)}."
            + did_you_mean(name, MODELS)
            + " Register your own with @pyro_gen.models.register_model('name')."
        )
    return MODELS[name]


def model_config(module: Any) -> tuple[str, dict] | None:
    """``(name, constructor arguments)`` of a registered model instance, else None."""
    return getattr(module, "_pyro_gen_config", None)


def _check_type(cls: type, key: str, value: Any, default: Any) -> None:
    if default is inspect.Parameter.empty or default is None or value is None:
        return
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        tuple: lambda v: isinstance(v, (list, tuple)),
        list: lambda v: isinstance(v, (list, tuple)),
    }.get(type(default))
    if ok is not None and not ok(value):
        raise ConfigError(
            f"{cls.__name__} argument {key!r} should be a {type(default).__name__} "
            f"(default {default!r}); got {value!r} of type {type(value).__name__}."
        )


def build_model(name: str, config: dict | None = None):
    """Rebuild a registered model from its name and constructor arguments."""
    cls = get_model_class(name)
    config = dict(config or {})
    params = inspect.signature(cls.__init__).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    allowed = [k for k, p in params.items() if k != "self" and p.kind is not p.VAR_KEYWORD]
    for key, value in config.items():
        if key not in params and not takes_kwargs:
            raise ConfigError(
                f"model {name!r} has no argument {key!r}."
                + did_you_mean(key, allowed)
                + f" Its arguments are {allowed}."
            )
        if key in params:
            _check_type(cls, key, value, params[key].default)
    try:
        return cls(**config)
    except TypeError as e:
        raise ConfigError(f"could not build model {name!r} from {config}: {e}") from e
