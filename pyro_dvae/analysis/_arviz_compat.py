"""The few ArviZ calls whose signature differs between ArviZ 0.x (InferenceData) and 1.x (DataTree).

ArviZ 0.x takes one keyword per group (``from_dict(posterior=..., prior=...)``) and returns an
:class:`arviz.InferenceData`; ArviZ 1.x takes one mapping of groups (``from_dict({"posterior":
...})``) and returns an :class:`xarray.DataTree`. Everything else used here (``.to_netcdf``,
attribute access to groups, ``az.summary``, ``az.loo``) has the same spelling in both. A group
outside ArviZ's schema (``training``) is added after ``from_dict`` as a plain dataset without
``chain``/``draw``: ``InferenceData.add_groups`` on 0.x, a child node of the ``DataTree`` on 1.x.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

with warnings.catch_warnings():  # ArviZ 0.x announces its 1.x refactor on import; not actionable
    warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing", category=FutureWarning)
    import arviz as az

__all__ = [
    "ARVIZ_MAJOR",
    "add_group",
    "from_dict",
    "group_names",
    "open_netcdf",
    "set_group_attrs",
]

ARVIZ_MAJOR = int(az.__version__.split(".")[0])


def from_dict(
    groups: Mapping[str, Mapping[str, np.ndarray]],
    *,
    coords: Mapping[str, Sequence[Any]] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Any:
    """Call ``az.from_dict`` with ``groups`` (group name -> variable name -> array).

    Arrays of sample groups start with ``(chain, draw)``; ``observed_data`` and
    ``constant_data`` arrays do not.

    Example:
        >>> import numpy as np
        >>> idata = from_dict({"posterior": {"a": np.zeros((2, 5, 3))}}, dims={"a": ["item"]})
        >>> dict(idata.posterior["a"].sizes)
        {'chain': 2, 'draw': 5, 'item': 3}
    """
    groups = {name: dict(vars_) for name, vars_ in groups.items() if vars_}
    kwargs: dict[str, Any] = {
        "coords": dict(coords) if coords else None,
        "dims": {k: list(v) for k, v in dims.items()} if dims else None,
        "attrs": dict(attrs) if attrs else None,
    }
    if ARVIZ_MAJOR >= 1:  # arviz-base: from_dict(data: {group: {var: array}}) -> DataTree
        return az.from_dict(groups, **kwargs)
    return az.from_dict(**groups, **kwargs)


def open_netcdf(path: str | os.PathLike) -> Any:
    """Read a file written by ``.to_netcdf`` back into ArviZ data, fully loaded in memory.

    Example:
        >>> import numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "d.nc")
        >>> _ = from_dict({"posterior": {"a": np.ones((1, 4))}}).to_netcdf(path)
        >>> float(open_netcdf(path).posterior["a"].sum())
        4.0
    """
    if hasattr(az, "from_netcdf"):
        data = az.from_netcdf(path)
    else:  # pragma: no cover - ArviZ 1.x without from_netcdf
        import xarray as xr

        data = xr.open_datatree(path)
    if hasattr(data, "load"):
        data.load()
    return data


def group_names(data: Any) -> list[str]:
    """The group names of ArviZ data: ``InferenceData.groups()`` or ``DataTree.groups``.

    Example:
        >>> import numpy as np
        >>> group_names(from_dict({"posterior": {"a": np.zeros((1, 2))}}))
        ['posterior']
    """
    groups = data.groups() if callable(data.groups) else data.groups
    return [str(g).strip("/") for g in groups if str(g).strip("/")]


def add_group(
    data: Any,
    name: str,
    values: Mapping[str, np.ndarray],
    *,
    dims: Mapping[str, Sequence[str]],
    coords: Mapping[str, Sequence[Any]] | None = None,
) -> None:
    """Add group ``name`` (variables without ``chain``/``draw``, dims named by ``dims``) to
    ArviZ data, in place.

    Example:
        >>> import numpy as np
        >>> idata = from_dict({"posterior": {"a": np.zeros((1, 2))}})
        >>> add_group(idata, "training", {"loss": np.ones(3)}, dims={"loss": ["step"]})
        >>> group_names(idata), dict(idata["training"].sizes)
        (['posterior', 'training'], {'step': 3})
    """
    import xarray as xr

    used = {d for name_ in values for d in dims[name_]}
    dataset = xr.Dataset(
        {var: (list(dims[var]), np.asarray(arr)) for var, arr in values.items()},
        coords={k: np.asarray(v) for k, v in (coords or {}).items() if k in used},
    )
    if hasattr(data, "add_groups"):  # ArviZ 0.x InferenceData
        data.add_groups({name: dataset})
    else:  # pragma: no cover - ArviZ 1.x DataTree
        data[name] = xr.DataTree(dataset=dataset)


def set_group_attrs(data: Any, attrs: Mapping[str, Any]) -> None:
    """Add ``attrs`` to every group of ArviZ data (and to the data itself), in place.

    Example:
        >>> import numpy as np
        >>> groups = {"posterior": {"a": np.zeros((1, 2))}, "observed_data": {"y": np.ones(2)}}
        >>> idata = from_dict(groups)
        >>> set_group_attrs(idata, {"model": "m"})
        >>> idata.posterior.attrs["model"], idata.observed_data.attrs["model"]
        ('m', 'm')
    """
    for group in group_names(data):
        data[group].attrs.update(attrs)
    data.attrs.update(attrs)
