"""The benchmark families: each registers itself with ``@family(name, help)``;
``run(name, **options)`` runs one and returns its rows."""

FAMILIES = {}
# The order of `python -m nncore bench all`, of the reports and of the plot's panels.
ORDER = ("gemm", "layers", "train", "infer", "conv")


def family(name, help):
    """Register a benchmark family: fn(quick=False, threads=None, **options) -> rows."""
    def register(fn):
        FAMILIES[name] = (fn, help)
        return fn
    return register


def run(name, **options):
    """Run the family `name` and return its rows."""
    if name not in FAMILIES:
        raise ValueError(f"unknown benchmark family {name!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[name][0](**options)
