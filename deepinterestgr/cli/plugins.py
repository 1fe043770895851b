"""`dig plugins list`."""

from __future__ import annotations

from deepinterestgr.registry import KINDS, get_registry


def list_plugins_command(kind: str | None = None, pattern: str = "*") -> None:
    """Print every registered plugin: kind, name, the distribution that registered it, and a one-line description.

    Args:
        kind: only this kind (one of dataset_reader, captioner, image_encoder, intent_miner, quality_judge,
            text_encoder, collaborative_source, attribute_source, quantizer, generator, reward). The class column is
            what a config names as `class_path`.
        pattern: fnmatch pattern on plugin names, e.g. "rq*".
    """
    registry = get_registry()
    rows = [("kind", "name", "source", "class", "description")]
    for k in [kind] if kind else KINDS:
        for name in registry.list(k, pattern):
            spec = registry.get(k, name)
            alias = f" (aliases: {', '.join(spec.aliases)})" if spec.aliases else ""
            rows.append((k, name, spec.source, spec.cls.__name__, spec.description + alias))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
