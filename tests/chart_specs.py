"""Reading Vega-Lite specs (``chart.to_dict()``) in tests: the views a chart draws, each with
its mark, encoding and data rows, so that a test checks what a chart shows rather than only
that it builds."""
from __future__ import annotations


def views(spec: dict) -> list[dict]:
    """The single views of a spec, in drawing order, through layers and facets: one dict per
    view with ``mark`` (its type), ``encoding`` and ``rows`` (the records it draws, from the
    spec's ``datasets``; a view without its own data uses its parent's)."""
    datasets = spec.get("datasets", {})
    out: list[dict] = []

    def rows(node: dict, inherited):
        data = node.get("data")
        if data is None:
            return inherited
        if "name" in data:
            return datasets[data["name"]]
        return data.get("values", inherited)

    def walk(node: dict, inherited) -> None:
        here = rows(node, inherited)
        if "layer" in node:
            for child in node["layer"]:
                walk(child, here)
        elif "spec" in node:                      # a facet
            walk(node["spec"], here)
        elif "mark" in node:
            mark = node["mark"]
            out.append({"mark": mark if isinstance(mark, str) else mark["type"],
                        "encoding": node.get("encoding", {}), "rows": here})
    walk(spec, None)
    return out


def channel(view: dict, name: str) -> tuple:
    """(field, aggregate, type) of an encoding channel of a view; ``("datum", value, None)``
    for a constant."""
    enc = view["encoding"][name]
    if "datum" in enc:
        return ("datum", enc["datum"], None)
    return (enc.get("field"), enc.get("aggregate"), enc.get("type"))
