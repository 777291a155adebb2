# Copyright (c) mmvit3 authors. All rights reserved.
"""Finding the datasets that read files, in a config or among built
datasets, through their wrappers; and the metrics of a split's evaluator."""
from typing import Any, Iterator, List, Mapping, Tuple


def _child(node: Any, name: str) -> Any:
    """``node``'s entry (a config dict) or attribute (a built dataset)
    ``name``; a config dict held by a built dataset does not count."""
    if isinstance(node, Mapping):
        return node.get(name)
    inner = getattr(node, name, None)
    return None if isinstance(inner, (str, Mapping)) else inner


def leaf_datasets(dataset: Any, key: str = '') -> Iterator[Tuple[str, Any]]:
    """Yield ``(config key, dataset)`` of the datasets under ``dataset`` (a
    dataset config, or a built dataset) that read files, looking through
    wrappers (``dataset=`` / ``datasets=[...]``); ``key`` names
    ``dataset`` and grows with the wrappers' entries."""
    if dataset is None or isinstance(dataset, str) or (
            not isinstance(dataset, Mapping) and hasattr(dataset, 'get')):
        return
    inner = _child(dataset, 'dataset')
    if inner is not None:
        yield from leaf_datasets(inner, f'{key}.dataset')
        return
    inner = _child(dataset, 'datasets')
    if isinstance(inner, (list, tuple)):
        for i, d in enumerate(inner):
            yield from leaf_datasets(d, f'{key}.datasets[{i}]')
        return
    yield key, dataset


def split_datasets(cfg: Any, split: str) -> Iterator[Tuple[str, Any]]:
    """:func:`leaf_datasets` of a config's ``{split}_dataloader``, keyed
    from ``{split}_dataloader.dataset``."""
    loader = cfg.get(f'{split}_dataloader') or {}
    yield from leaf_datasets(loader.get('dataset'), f'{split}_dataloader.dataset')


def split_metrics(cfg: Any, split: str) -> List[Any]:
    """The metric configs of a config's ``{split}_evaluator`` (one, a list,
    or an ``Evaluator`` dict with ``metrics``)."""
    evaluator = cfg.get(f'{split}_evaluator')
    if evaluator is None:
        return []
    if isinstance(evaluator, Mapping) and 'metrics' in evaluator:
        evaluator = evaluator['metrics']
    if not isinstance(evaluator, (list, tuple)):
        evaluator = [evaluator]
    return [m for m in evaluator if isinstance(m, Mapping)]
