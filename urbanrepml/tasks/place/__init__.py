"""Place and building embeddings: identities seen in several views, trained with triplets on the one loop.

- :mod:`.data`: identities and views from an image index (``identity`` column), pixel inputs,
  identity splits (spatial blocks or identities), queries against a gallery;
- :mod:`.fingerprints`: perceptual hashes and thumbnail PCA, near-duplicates;
- :mod:`.bands`: difficulty bands of visual neighbours of other identities (BallTree);
- :mod:`.sampler`: UCB1 over bands (in the training process) and the uniform ablation;
- :mod:`.metrics`: recall@k and mAP of queries against a gallery;
- :mod:`.gallery`: index a gallery of embeddings, answer top-k queries;
- :mod:`.task`: the triplet :class:`~urbanrepml.training.task.Task` and its training entry.
"""
