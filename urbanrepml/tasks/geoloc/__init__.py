"""Image geolocation over H3 cells: classes, losses, the training task, prediction, metrics and baselines.

- :mod:`~urbanrepml.tasks.geoloc.classes`: H3 cells over the training images, small cells merged into parents;
- :mod:`~urbanrepml.tasks.geoloc.losses`: cross-entropy, distance-aware soft targets, parent-cell term;
- :mod:`~urbanrepml.tasks.geoloc.data`: pixels (scenes read once, jittered windows) and frozen-encoder features;
- :mod:`~urbanrepml.tasks.geoloc.task`: the :class:`~urbanrepml.training.task.Task` on the generic loop;
- :mod:`~urbanrepml.tasks.geoloc.predict`: top-k cells, predicted points, accuracy and km metrics;
- :mod:`~urbanrepml.tasks.geoloc.baselines`: kNN on frozen features and the majority cell;
- :mod:`~urbanrepml.tasks.geoloc.search`: the tuning search space.
"""
