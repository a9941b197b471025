"""The layer registry: layer types by name, so configs (and model files)
can name them; ``register_layer`` adds one from outside the package."""
from .base import Layer

__all__ = ["LAYERS", "register_layer", "layer_config", "layer_from_config", "param_specs_of"]

LAYERS = {}
MAX_DEPTH = 32


def register_layer(cls):
    """Register a Layer subclass under its class name so ``layer_from_config``
    (and ``nncore.load``) can rebuild it; usable as a class decorator. The
    class describes its tensors with ``param_specs(config)``."""
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise TypeError(f"register_layer: expected a Layer subclass, got {cls!r}")
    LAYERS[cls.__name__] = cls
    return cls


def layer_config(layer):
    """``{"type": <class name>, **layer.get_config()}``."""
    return {"type": type(layer).__name__, **layer.get_config()}


def _lookup(config, depth):
    if depth > MAX_DEPTH:
        raise ValueError(f"layer config nested deeper than {MAX_DEPTH} levels")
    if not isinstance(config, dict):
        raise ValueError(f"a layer config must be a dict, got {type(config).__name__}")
    kind = config.get("type")
    cls = LAYERS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown layer type {kind!r}; known: {sorted(LAYERS)}")
    return cls, {k: v for k, v in config.items() if k != "type"}


def layer_from_config(config, _depth=0):
    """Rebuild a layer (or a whole Sequential) from ``layer_config`` output.
    Raises ValueError for unknown types, unexpected keys or bad values.
    Containers (layers holding layers) take the nesting depth."""
    cls, kwargs = _lookup(config, _depth)
    try:
        if getattr(cls, "is_container", False):
            return cls.from_config(kwargs, _depth)
        return cls.from_config(kwargs)
    except TypeError as exc:
        raise ValueError(f"bad config for {cls.__name__}: {exc}") from None


def param_specs_of(config, _depth=0):
    """The Param list a ``layer_config`` implies, without building anything
    (containers prefix their children's names); ValueError when the config
    is not one of a registered, well-formed layer."""
    cls, kwargs = _lookup(config, _depth)
    try:
        if getattr(cls, "is_container", False):
            return cls.param_specs(kwargs, _depth)
        return cls.param_specs(kwargs)
    except TypeError as exc:
        raise ValueError(f"bad config for {cls.__name__}: {exc}") from None
